package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
)

// faultyHGX copies the healthy HGX fixture and lets inject break it, as
// a technician finds it after shipping: the tree is real sysfs layout,
// symlinks and all.
func faultyHGX(t *testing.T, inject func(root string)) wire.Inventory {
	t.Helper()
	root := filepath.Join(t.TempDir(), "hgx")
	if err := os.CopyFS(root, os.DirFS("testdata/hgx-h100")); err != nil {
		t.Fatal(err)
	}
	inject(root)
	inv, err := Inspect(root)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The fault fixtures: each a healthy HGX H100 with one thing wrong. Their
// inventories are golden files (testdata/hgx-h100-FAULT.inventory.json)
// the provisioner's acceptance tests judge, so the chain fixture → agent
// → report is tested end to end.
var hgxFaults = map[string]func(t *testing.T, root string){
	"gpu-x8": func(t *testing.T, root string) {
		d := filepath.Join(root, "sys/bus/pci/devices/0000:9a:00.0")
		write(t, filepath.Join(d, "current_link_speed"), "16.0 GT/s PCIe\n")
		write(t, filepath.Join(d, "current_link_width"), "8\n")
	},
	"ib-down": func(t *testing.T, root string) {
		p := filepath.Join(root, "sys/class/infiniband/mlx5_3/ports/1")
		write(t, filepath.Join(p, "state"), "1: DOWN\n")
		write(t, filepath.Join(p, "phys_state"), "2: Polling\n")
		write(t, filepath.Join(p, "rate"), "10 Gb/sec (4X SDR)\n")
	},
	"dimm-missing": func(t *testing.T, root string) {
		path := filepath.Join(root, "sys/firmware/dmi/tables/DMI")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ss, err := parseSMBIOS(b)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range ss {
			if s.Type == smbiosMemoryDevice {
				if n == 10 { // P2-DIMMC1: "No Module Installed" has size 0
					s.Formatted[0x0C], s.Formatted[0x0D] = 0, 0
				}
				n++
			}
		}
		write(t, path, string(b))
		write(t, filepath.Join(root, "proc/meminfo"), "MemTotal:       1979195532 kB\n")
	},
	"ecc-errors": func(t *testing.T, root string) {
		mc := filepath.Join(root, "sys/devices/system/edac/mc/mc1")
		write(t, filepath.Join(mc, "ce_count"), "1342\n")
		write(t, filepath.Join(mc, "dimm5/dimm_ce_count"), "1342\n")
	},
	"nvme-failing": func(t *testing.T, root string) {
		p := make([]byte, 512)
		p[0] = 0x04 // reliability degraded
		p[1], p[2] = 0x34, 0x01
		p[3], p[4], p[5] = 4, 10, 104
		p[160] = 37
		p[176] = 112
		write(t, filepath.Join(root, "dev/nvme5n1"), string(p))
	},
}

func TestFaultFixturesShowTheirFault(t *testing.T) {
	for name, inject := range hgxFaults {
		t.Run(name, func(t *testing.T) {
			inv := faultyHGX(t, func(root string) { inject(t, root) })
			hw := inv.Hardware
			switch name {
			case "gpu-x8":
				for _, l := range hw.PCIeLinks {
					bad := l.Width != l.MaxWidth || l.SpeedGTs != l.MaxSpeedGTs
					if bad != (l.Address == "0000:9a:00.0") {
						t.Errorf("link %+v", l)
					}
					if l.Address == "0000:9a:00.0" && (l.Kind != wire.LinkGPU || l.Width != 8 || l.SpeedGTs != 16 || l.MaxWidth != 16 || l.MaxSpeedGTs != 32) {
						t.Errorf("degraded GPU link read as %+v", l)
					}
				}
			case "ib-down":
				p := hw.IBPorts[3]
				if p.Device != "mlx5_3" || p.State != "DOWN" || p.PhysState != "Polling" || p.RateGbps != 10 || p.PCIAddress != "0000:5e:00.0" {
					t.Errorf("port = %+v", p)
				}
			case "dimm-missing":
				if len(hw.DIMMs) != 16 || hw.DIMMs[10].Locator != "P2-DIMMC1" || hw.DIMMs[10].SizeMiB != 0 || hw.DIMMs[9].SizeMiB != 131072 {
					t.Errorf("dimms = %+v", hw.DIMMs)
				}
			case "ecc-errors":
				e := hw.EDAC[1]
				if e.Corrected != 1342 || len(e.ByDIMM) != 1 || e.ByDIMM[0].Label != "CPU_SrcID#1_MC#2_Chan#1_DIMM#0" {
					t.Errorf("edac = %+v", e)
				}
			case "nvme-failing":
				h := hw.NVMe[5]
				if h.Disk != "nvme5n1" || h.CriticalWarning != 4 || h.MediaErrors != 37 || h.PercentageUsed != 104 || h.AvailableSpare != 4 || h.TemperatureK != 308 || h.ErrorLogEntries != 112 {
					t.Errorf("nvme = %+v", h)
				}
			}
			checkGolden(t, "hgx-h100-"+name, inv)
		})
	}
}

func TestHealthyHGXHasEveryFact(t *testing.T) {
	inv, err := Inspect("testdata/hgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	hw := inv.Hardware
	// 8 GPUs + 8 CX-7 + 2 X550 ports + 10 NVMe.
	if len(hw.PCIeLinks) != 28 || len(hw.DIMMs) != 16 || len(hw.EDAC) != 2 || len(hw.NVMe) != 10 || len(hw.IBPorts) != 8 || hw.DMIError != "" {
		t.Fatalf("hardware: %d links, %d DIMMs, %d EDAC, %d NVMe, %d IB ports, DMI error %q",
			len(hw.PCIeLinks), len(hw.DIMMs), len(hw.EDAC), len(hw.NVMe), len(hw.IBPorts), hw.DMIError)
	}
	for _, l := range hw.PCIeLinks {
		if l.Width != l.MaxWidth || l.SpeedGTs != l.MaxSpeedGTs || l.Width == 0 {
			t.Errorf("link %+v not at its maximum", l)
		}
	}
	want := wire.IBPort{Device: "mlx5_7", Port: 1, PCIAddress: "0000:dc:00.0", State: "ACTIVE", PhysState: "LinkUp",
		RateGbps: 400, Rate: "400 Gb/sec (4X NDR)", LinkLayer: "InfiniBand", PortGUID: "a088:c203:005e:1ab7",
		NodeGUID: "a088:c203:005e:1ab7", Firmware: "28.39.1002"}
	if hw.IBPorts[7] != want {
		t.Errorf("ib port 7 = %+v, want %+v", hw.IBPorts[7], want)
	}
	wantDIMM := wire.DIMM{Locator: "P2-DIMMH1", Bank: "P1_Node1_Channel7_Dimm0", SizeMiB: 131072, Type: "DDR5", SpeedMTs: 4800,
		Manufacturer: "Samsung", Serial: "8012000H2", PartNumber: "M321RAGA0B20-CWMKH"}
	if hw.DIMMs[15] != wantDIMM {
		t.Errorf("dimm 15 = %+v, want %+v", hw.DIMMs[15], wantDIMM)
	}
	if d := hw.DCGM; d == nil || d.Ran || d.Reason != "no DCGM in the boot environment" {
		t.Errorf("dcgm = %+v: a diagnostic that did not run must say so", d)
	}
}

func TestSMBIOSRejectsATruncatedTable(t *testing.T) {
	b, err := os.ReadFile("testdata/hgx-h100/sys/firmware/dmi/tables/DMI")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseSMBIOS(b[:100]); err == nil {
		t.Error("no error for a table cut in the middle of a structure")
	}
}
