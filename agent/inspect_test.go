package agent

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
)

var update = flag.Bool("update", false, "rewrite the golden inventories in testdata")

// checkGolden compares inv with testdata/NAME.inventory.json. The golden
// files were checked by hand against the fixture script; -update rewrites
// them.
func checkGolden(t *testing.T, name string, inv wire.Inventory) {
	t.Helper()
	got, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name+".inventory.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("inventory differs from %s (run with -update and review the diff):\n%s", path, got)
	}
}

func TestInspectHGXH100(t *testing.T) {
	inv, err := Inspect("testdata/hgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	if want := (wire.CPU{Model: "Intel(R) Xeon(R) Platinum 8480+", Sockets: 2, Cores: 112, Threads: 224}); inv.CPU != want {
		t.Errorf("cpu = %+v, want %+v", inv.CPU, want)
	}
	if want := int64(2113413260) * 1024; inv.MemoryBytes != want {
		t.Errorf("memory = %d, want %d", inv.MemoryBytes, want)
	}
	wantSys := wire.System{Vendor: "Supermicro", Product: "SYS-821GE-TNHR", Serial: "S692541X4A13207",
		UUID: "7c3d1e4a-91b2-11ee-8000-3cecef8a2b10", BoardVendor: "Supermicro", BoardName: "X13DEG-OAD",
		BIOSVendor: "American Megatrends International, LLC.", BIOSVersion: "2.1", BIOSDate: "11/29/2023"}
	if inv.System != wantSys {
		t.Errorf("system = %+v, want %+v", inv.System, wantSys)
	}
	wantGPUs := []wire.GPUGroup{{Model: "NVIDIA H100 SXM5 80GB", Count: 8, Addresses: []string{
		"0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
		"0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"}}}
	if !reflect.DeepEqual(inv.GPUs, wantGPUs) {
		t.Errorf("gpus = %+v, want %+v", inv.GPUs, wantGPUs)
	}
	if len(inv.Disks) != 10 {
		t.Fatalf("%d disks, want 10", len(inv.Disks))
	}
	wantBoot := wire.Disk{Name: "nvme0n1", SizeBytes: 1875385008 * 512, Model: "SAMSUNG MZ1L2960HCJR-00A07",
		Serial: "S665NE0T101234", NVMe: true, PCIAddress: "0000:01:00.0"}
	if inv.Disks[0] != wantBoot {
		t.Errorf("disk 0 = %+v, want %+v", inv.Disks[0], wantBoot)
	}
	wantData := wire.Disk{Name: "nvme9n1", SizeBytes: 15002931888 * 512, Model: "KCD6XLUL7T68",
		Serial: "Z1E0A017T7H8", NVMe: true, PCIAddress: "0000:c8:00.0"}
	if inv.Disks[9] != wantData {
		t.Errorf("disk 9 = %+v, want %+v", inv.Disks[9], wantData)
	}
	var ib, eth int
	for _, n := range inv.NICs {
		switch n.Driver {
		case "mlx5_core":
			ib++
			if n.SpeedMbps != 400000 || !n.Carrier || len(n.MAC) != 59 {
				t.Errorf("IB nic %+v", n)
			}
		case "ixgbe":
			eth++
		default:
			t.Errorf("unexpected nic %+v", n)
		}
	}
	if ib != 8 || eth != 2 {
		t.Errorf("%d IB + %d Ethernet NICs, want 8 + 2", ib, eth)
	}
	wantEno1 := wire.NIC{Name: "eno1", MAC: "3c:ec:ef:8a:2b:10", Driver: "ixgbe", SpeedMbps: 10000, Carrier: true, PCIAddress: "0000:c1:00.0"}
	wantEno2 := wire.NIC{Name: "eno2", MAC: "3c:ec:ef:8a:2b:11", Driver: "ixgbe", PCIAddress: "0000:c1:00.1"}
	if inv.NICs[0] != wantEno1 || inv.NICs[1] != wantEno2 {
		t.Errorf("onboard nics = %+v %+v", inv.NICs[0], inv.NICs[1])
	}
	// 8 GPUs + 4 NVSwitches + 8 CX-7 + 2 X550 + 1 VGA + 10 NVMe.
	if len(inv.PCI) != 33 {
		t.Errorf("%d PCI devices, want 33", len(inv.PCI))
	}
	wantGPU0 := wire.PCIDevice{Address: "0000:18:00.0", VendorID: "10de", DeviceID: "2330", Class: "030200",
		SubVendorID: "10de", SubDeviceID: "16c1", NUMANode: 0, Driver: "nvidia", Vendor: "NVIDIA", Name: "NVIDIA H100 SXM5 80GB"}
	for _, p := range inv.PCI {
		if p.Address == wantGPU0.Address && p != wantGPU0 {
			t.Errorf("gpu 0 = %+v, want %+v", p, wantGPU0)
		}
		if p.Address == "0000:dc:00.0" && (p.Name != "NVIDIA ConnectX-7" || p.NUMANode != 1) {
			t.Errorf("cx7 = %+v", p)
		}
	}
	checkGolden(t, "hgx-h100", inv)
}

func TestInspectQEMU(t *testing.T) {
	inv, err := Inspect("testdata/qemu")
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Inventory{
		System: wire.System{Vendor: "QEMU", Product: "Standard PC (i440FX + PIIX, 1996)",
			BIOSVendor: "SeaBIOS", BIOSVersion: "1.16.2-debian-1.16.2-1", BIOSDate: "04/01/2014"},
		CPU:         wire.CPU{Model: "QEMU Virtual CPU version 2.5+", Sockets: 1, Cores: 1, Threads: 1},
		MemoryBytes: 490400 * 1024,
		// Virtio devices sit on the PCI functions that carry them.
		Disks: []wire.Disk{{Name: "vda", SizeBytes: 2 << 30, Serial: "metalhall-vm-1", Rotational: true, PCIAddress: "0000:00:04.0"}},
		NICs:  []wire.NIC{{Name: "eth0", MAC: "52:54:00:12:34:56", Driver: "virtio_net", Carrier: true, PCIAddress: "0000:00:03.0"}},
		PCI: []wire.PCIDevice{
			{Address: "0000:00:00.0", VendorID: "8086", DeviceID: "1237", Class: "060000", SubVendorID: "1af4", SubDeviceID: "1100", NUMANode: -1, Vendor: "Intel", Name: "440FX host bridge"},
			{Address: "0000:00:01.0", VendorID: "8086", DeviceID: "7000", Class: "060100", SubVendorID: "1af4", SubDeviceID: "1100", NUMANode: -1, Vendor: "Intel", Name: "PIIX3 ISA bridge"},
			{Address: "0000:00:02.0", VendorID: "1234", DeviceID: "1111", Class: "030000", SubVendorID: "1af4", SubDeviceID: "1100", NUMANode: -1, Vendor: "QEMU", Name: "QEMU VGA"},
			{Address: "0000:00:03.0", VendorID: "1af4", DeviceID: "1000", Class: "020000", SubVendorID: "1af4", SubDeviceID: "0001", NUMANode: -1, Driver: "virtio-pci", Vendor: "Red Hat (virtio)", Name: "virtio network (legacy)"},
			{Address: "0000:00:04.0", VendorID: "1af4", DeviceID: "1001", Class: "010000", SubVendorID: "1af4", SubDeviceID: "0002", NUMANode: -1, Driver: "virtio-pci", Vendor: "Red Hat (virtio)", Name: "virtio block (legacy)"},
		},
		GPUs: []wire.GPUGroup{},
		// A VM has none of what acceptance reads, and says so rather
		// than reporting an empty, healthy machine.
		Hardware: &wire.Hardware{PCIeLinks: []wire.PCIeLink{}, DIMMs: []wire.DIMM{}, EDAC: []wire.EDACCounts{},
			NVMe: []wire.NVMeHealth{}, IBPorts: []wire.IBPort{},
			DMIError: "no SMBIOS table at /sys/firmware/dmi/tables/DMI (kernel without CONFIG_DMI_SYSFS?)",
			DCGM:     &wire.DCGMResult{Reason: "no DCGM in the boot environment"}},
	}
	if !reflect.DeepEqual(inv, want) {
		g, _ := json.MarshalIndent(inv, "", " ")
		t.Errorf("inventory =\n%s", g)
	}
	checkGolden(t, "qemu", inv)
}

func TestInspectBadRoot(t *testing.T) {
	if _, err := Inspect(t.TempDir()); err == nil {
		t.Fatal("no error for an empty root")
	}
}
