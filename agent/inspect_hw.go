package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
)

// inspectHardware reads the facts acceptance is judged on: PCIe links,
// DIMMs, EDAC counters, NVMe health and InfiniBand ports. Each source is
// optional (a VM has no EDAC, no InfiniBand): a missing one leaves its
// list empty, and the service's checks say "nothing found" where the
// profile expected something. Only files and one ioctl per NVMe
// controller (with its own timeout) are read, so it takes bounded time.
func inspectHardware(root string, inv *wire.Inventory) *wire.Hardware {
	hw := &wire.Hardware{
		PCIeLinks: readPCIeLinks(filepath.Join(root, "sys/bus/pci/devices"), inv),
		EDAC:      readEDAC(filepath.Join(root, "sys/devices/system/edac/mc")),
		NVMe:      readNVMeHealth(root, inv.Disks),
		IBPorts:   readIBPorts(filepath.Join(root, "sys/class/infiniband")),
	}
	var err error
	if hw.DIMMs, err = readDIMMs(filepath.Join(root, "sys/firmware/dmi/tables/DMI")); err != nil {
		hw.DMIError = err.Error()
	}
	hw.DCGM = dcgmPresence(root)
	return hw
}

// linkKind says whether a PCI device's link is one acceptance checks:
// GPUs, network controllers (Ethernet 0200, InfiniBand 0207) and NVMe
// (010802).
func linkKind(p wire.PCIDevice) string {
	switch {
	case isGPU(p):
		return wire.LinkGPU
	case strings.HasPrefix(p.Class, "0200"), strings.HasPrefix(p.Class, "0207"):
		return wire.LinkNIC
	case strings.HasPrefix(p.Class, "0108"):
		return wire.LinkNVMe
	}
	return ""
}

// parseLinkSpeed reads "32.0 GT/s PCIe" (kernels ≥ 5.x) or "8 GT/s"
// (older); 0 when unknown ("Unknown", or absent on virtual devices).
func parseLinkSpeed(s string) float64 {
	f, _, _ := strings.Cut(s, " ")
	v, err := strconv.ParseFloat(f, 64)
	if err != nil {
		return 0
	}
	return v
}

// readPCIeLinks reads the link of every GPU, NIC and NVMe controller.
// Devices without link attributes (virtio on a VM's root bus) are left
// out: there is no link to judge. The NVIDIA driver lowers an idle GPU's
// link speed to save power; the agent's boot environment normally has no
// NVIDIA driver, so a GPU here is at the speed it trained to at boot.
func readPCIeLinks(dir string, inv *wire.Inventory) []wire.PCIeLink {
	ifaces := map[string][]string{}
	for _, n := range inv.NICs {
		if n.PCIAddress != "" {
			ifaces[n.PCIAddress] = append(ifaces[n.PCIAddress], n.Name)
		}
	}
	links := []wire.PCIeLink{}
	for _, p := range inv.PCI {
		kind := linkKind(p)
		if kind == "" {
			continue
		}
		d := filepath.Join(dir, p.Address)
		a := func(n string) string { return readAttr(filepath.Join(d, n)) }
		if a("max_link_width") == "" {
			continue
		}
		l := wire.PCIeLink{Address: p.Address, Kind: kind, Name: p.Name,
			SpeedGTs: parseLinkSpeed(a("current_link_speed")), MaxSpeedGTs: parseLinkSpeed(a("max_link_speed")),
			NetInterfaces: ifaces[p.Address]}
		l.Width, _ = strconv.Atoi(a("current_link_width"))
		l.MaxWidth, _ = strconv.Atoi(a("max_link_width"))
		links = append(links, l)
	}
	return links
}

// readEDAC reads each memory controller's corrected and uncorrected error
// counts, and the DIMMs that have any (per-DIMM counters exist where the
// EDAC driver maps errors to DIMMs: skx_edac, i10nm_edac, amd64_edac).
func readEDAC(dir string) []wire.EDACCounts {
	out := []wire.EDACCounts{}
	mcs, _ := filepath.Glob(filepath.Join(dir, "mc[0-9]*"))
	sort.Strings(mcs)
	for _, mc := range mcs {
		num := func(p string) int64 { n, _ := strconv.ParseInt(readAttr(p), 10, 64); return n }
		c := wire.EDACCounts{Controller: filepath.Base(mc), Corrected: num(filepath.Join(mc, "ce_count")), Uncorrected: num(filepath.Join(mc, "ue_count"))}
		dimms, _ := filepath.Glob(filepath.Join(mc, "dimm[0-9]*"))
		sort.Strings(dimms)
		for _, d := range dimms {
			e := wire.DIMMErrors{Label: readAttr(filepath.Join(d, "dimm_label")),
				Corrected: num(filepath.Join(d, "dimm_ce_count")), Uncorrected: num(filepath.Join(d, "dimm_ue_count"))}
			if e.Label == "" {
				e.Label = filepath.Base(d)
			}
			if e.Corrected > 0 || e.Uncorrected > 0 {
				c.ByDIMM = append(c.ByDIMM, e)
			}
		}
		out = append(out, c)
	}
	return out
}

// readIBPorts reads every port of every RDMA device.
func readIBPorts(dir string) []wire.IBPort {
	out := []wire.IBPort{}
	devs, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range devs {
		d := filepath.Join(dir, e.Name())
		ports, _ := os.ReadDir(filepath.Join(d, "ports"))
		for _, pe := range ports {
			n, err := strconv.Atoi(pe.Name())
			if err != nil {
				continue
			}
			pd := filepath.Join(d, "ports", pe.Name())
			a := func(f string) string { return readAttr(filepath.Join(pd, f)) }
			p := wire.IBPort{Device: e.Name(), Port: n, PCIAddress: pciAddress(filepath.Join(d, "device")),
				State: ibState(a("state")), PhysState: ibState(a("phys_state")), Rate: a("rate"),
				LinkLayer: a("link_layer"), NodeGUID: readAttr(filepath.Join(d, "node_guid")), Firmware: readAttr(filepath.Join(d, "fw_ver"))}
			p.RateGbps = parseLinkSpeed(p.Rate)
			// The port GUID is the interface ID of GID 0 (its low 64 bits).
			if g := strings.Split(a("gids/0"), ":"); len(g) == 8 {
				p.PortGUID = strings.Join(g[4:], ":")
			}
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Device != out[j].Device {
			return devLess(out[i].Device, out[j].Device)
		}
		return out[i].Port < out[j].Port
	})
	return out
}

// devLess orders mlx5_2 before mlx5_10.
func devLess(a, b string) bool {
	pa, na := splitNum(a)
	pb, nb := splitNum(b)
	if pa != pb {
		return pa < pb
	}
	return na < nb
}

func splitNum(s string) (string, int) {
	i := strings.LastIndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	n, _ := strconv.Atoi(s[i+1:])
	return s[:i+1], n
}

// ibState turns "4: ACTIVE" / "5: LinkUp" into "ACTIVE" / "LinkUp".
func ibState(s string) string {
	if _, v, ok := strings.Cut(s, ": "); ok {
		return v
	}
	return s
}

// readNVMeHealth reads the SMART log of every NVMe disk's controller.
func readNVMeHealth(root string, disks []wire.Disk) []wire.NVMeHealth {
	out := []wire.NVMeHealth{}
	for _, d := range disks {
		if !d.NVMe {
			continue
		}
		h := wire.NVMeHealth{Disk: d.Name, Model: d.Model, Serial: d.Serial,
			Firmware: readAttr(filepath.Join(root, "sys/block", d.Name, "device/firmware_rev"))}
		log, err := smartLog(filepath.Join(root, "dev", d.Name))
		if err == nil {
			err = parseSMARTLog(log, &h)
		}
		if err != nil {
			h.Error = err.Error()
		}
		out = append(out, h)
	}
	return out
}

// smartLog reads the 512-byte SMART / Health Information log page. A
// regular file at path is taken as the page itself: that is how fixture
// trees carry one; a block device gets the admin passthrough ioctl.
func smartLog(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("SMART log: %w", err)
	}
	if st.Mode().IsRegular() {
		return os.ReadFile(path)
	}
	return nvmeSMARTLog(path)
}

// parseSMARTLog reads log page 02h (NVMe base specification, "SMART /
// Health Information"): byte 0 critical warning, 1-2 composite
// temperature (K), 3 available spare, 4 its threshold, 5 percentage
// used, 128-143 power-on hours, 160-175 media and data integrity errors,
// 176-191 error log entries. The 128-bit counters are read as their low
// 64 bits.
func parseSMARTLog(b []byte, h *wire.NVMeHealth) error {
	if len(b) < 512 {
		return fmt.Errorf("SMART log: %d bytes, want 512", len(b))
	}
	h.CriticalWarning = b[0]
	h.TemperatureK = int(binary.LittleEndian.Uint16(b[1:3]))
	h.AvailableSpare, h.SpareThreshold, h.PercentageUsed = int(b[3]), int(b[4]), int(b[5])
	h.PowerOnHours = binary.LittleEndian.Uint64(b[128:136])
	h.MediaErrors = binary.LittleEndian.Uint64(b[160:168])
	h.ErrorLogEntries = binary.LittleEndian.Uint64(b[176:184])
	return nil
}

// dcgmPresence records whether NVIDIA DCGM is in the boot environment.
// Running `dcgmi diag` takes minutes and needs the NVIDIA driver; until
// the task asks for it, the report says plainly that it did not run.
func dcgmPresence(root string) *wire.DCGMResult {
	if root == "/" {
		if _, err := exec.LookPath("dcgmi"); err == nil {
			return &wire.DCGMResult{Reason: "dcgmi is present but the diagnostic was not asked for"}
		}
	}
	return &wire.DCGMResult{Reason: "no DCGM in the boot environment"}
}

// SMBIOS structure types and the fields of type 17 (Memory Device) read
// here (DMTF DSP0134, 7.18).
const (
	smbiosMemoryDevice = 17
	smbiosEndOfTable   = 127
)

// smbiosStruct is one structure of the SMBIOS table: its formatted area
// (header included) and its strings, 1-based as the fields refer to them.
type smbiosStruct struct {
	Type      uint8
	Formatted []byte
	Strings   []string
}

func (s smbiosStruct) str(off int) string {
	if off >= len(s.Formatted) {
		return ""
	}
	i := int(s.Formatted[off])
	if i == 0 || i > len(s.Strings) {
		return ""
	}
	return strings.TrimSpace(s.Strings[i-1])
}

func (s smbiosStruct) u16(off int) (uint16, bool) {
	if off+2 > len(s.Formatted) {
		return 0, false
	}
	return binary.LittleEndian.Uint16(s.Formatted[off:]), true
}

// parseSMBIOS splits a raw SMBIOS table (/sys/firmware/dmi/tables/DMI)
// into its structures. The Formatted slices alias b.
func parseSMBIOS(b []byte) ([]smbiosStruct, error) {
	var out []smbiosStruct
	for off := 0; off+4 <= len(b); {
		typ, n := b[off], int(b[off+1])
		if n < 4 || off+n > len(b) {
			return out, fmt.Errorf("SMBIOS structure at byte %d: length %d runs past the table", off, n)
		}
		s := smbiosStruct{Type: typ, Formatted: b[off : off+n]}
		// The string set ends with two NULs (one more if it is empty).
		p := off + n
		end := p
		for end+1 < len(b) && (b[end] != 0 || b[end+1] != 0) {
			end++
		}
		if end+1 >= len(b) {
			return out, fmt.Errorf("SMBIOS structure at byte %d: unterminated strings", off)
		}
		if end > p {
			s.Strings = strings.Split(string(b[p:end]), "\x00")
		}
		out = append(out, s)
		if typ == smbiosEndOfTable {
			break
		}
		off = end + 2
	}
	return out, nil
}

var memoryTypes = map[uint8]string{0x12: "DDR", 0x13: "DDR2", 0x18: "DDR3", 0x1A: "DDR4", 0x1E: "LPDDR4", 0x22: "DDR5", 0x23: "LPDDR5"}

// readDIMMs lists every memory device slot, empty ones included.
func readDIMMs(path string) ([]wire.DIMM, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []wire.DIMM{}, fmt.Errorf("no SMBIOS table at /sys/firmware/dmi/tables/DMI (kernel without CONFIG_DMI_SYSFS?)")
	}
	if err != nil {
		return []wire.DIMM{}, fmt.Errorf("SMBIOS: %w", err)
	}
	structs, err := parseSMBIOS(b)
	dimms := []wire.DIMM{}
	for _, s := range structs {
		if s.Type != smbiosMemoryDevice || len(s.Formatted) < 0x15 {
			continue
		}
		d := wire.DIMM{Locator: s.str(0x10), Bank: s.str(0x11)}
		size, _ := s.u16(0x0C)
		switch {
		case size == 0 || size == 0xFFFF: // empty, or unknown
		case size == 0x7FFF && len(s.Formatted) >= 0x20:
			d.SizeMiB = int64(binary.LittleEndian.Uint32(s.Formatted[0x1C:]) & 0x7FFFFFFF)
		case size&0x8000 != 0:
			d.SizeMiB = int64(size&0x7FFF) >> 10 // in KiB
		default:
			d.SizeMiB = int64(size)
		}
		if d.SizeMiB > 0 {
			d.Type = memoryTypes[s.Formatted[0x12]]
			if v, ok := s.u16(0x15); ok {
				d.SpeedMTs = int(v)
			}
			d.Manufacturer, d.Serial, d.PartNumber = s.str(0x17), s.str(0x18), s.str(0x1A)
		}
		dimms = append(dimms, d)
	}
	return dimms, err
}
