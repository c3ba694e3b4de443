package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
)

// Inspect reads the hardware inventory from the procfs and sysfs found
// under root ("/" on a real machine; tests point it at a fixture tree).
// Missing optional files leave fields empty; a missing /proc/cpuinfo or
// /proc/meminfo is an error because then root is not what it should be.
func Inspect(root string) (wire.Inventory, error) {
	var inv wire.Inventory
	var err error
	if inv.CPU, err = readCPU(filepath.Join(root, "proc/cpuinfo")); err != nil {
		return inv, err
	}
	if inv.MemoryBytes, err = readMemTotal(filepath.Join(root, "proc/meminfo")); err != nil {
		return inv, err
	}
	inv.System = readDMI(filepath.Join(root, "sys/class/dmi/id"))
	if inv.Disks, err = readDisks(filepath.Join(root, "sys/block")); err != nil {
		return inv, err
	}
	if inv.NICs, err = readNICs(filepath.Join(root, "sys/class/net")); err != nil {
		return inv, err
	}
	if inv.PCI, err = readPCI(filepath.Join(root, "sys/bus/pci/devices")); err != nil {
		return inv, err
	}
	inv.GPUs = summariseGPUs(inv.PCI)
	inv.Hardware = inspectHardware(root, &inv)
	return inv, nil
}

// readAttr reads a one-line sysfs attribute; "" when absent or unreadable
// (many attributes legitimately do not exist on some devices).
func readAttr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readCPU(path string) (wire.CPU, error) {
	f, err := os.Open(path)
	if err != nil {
		return wire.CPU{}, fmt.Errorf("cpu: %w", err)
	}
	defer f.Close()
	var c wire.CPU
	sockets := map[string]bool{}
	cores := map[string]bool{}
	phys := "0"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20) // flags lines are long
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			c.Threads++
			phys = "0" // reset: some VMs omit "physical id"
		case "model name":
			if c.Model == "" {
				c.Model = v
			}
		case "physical id":
			phys = v
			sockets[v] = true
		case "core id":
			cores[phys+"/"+v] = true
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("cpu: %s: %w", path, err)
	}
	c.Sockets = max(len(sockets), 1)
	// Without topology lines (some hypervisors) every thread is a core.
	c.Cores = len(cores)
	if c.Cores == 0 {
		c.Cores = c.Threads
	}
	return c, nil
}

func readMemTotal(path string) (int64, error) { return readMeminfo(path, "MemTotal") }

// readMeminfo reads one line of /proc/meminfo, in bytes.
func readMeminfo(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("memory: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == key+":" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("memory: %s: %s %q: %w", path, key, f[1], err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("memory: %s: no %s line", path, key)
}

func readDMI(dir string) wire.System {
	a := func(n string) string { return readAttr(filepath.Join(dir, n)) }
	return wire.System{
		Vendor: a("sys_vendor"), Product: a("product_name"), Serial: a("product_serial"),
		UUID: a("product_uuid"), BoardVendor: a("board_vendor"), BoardName: a("board_name"),
		BIOSVendor: a("bios_vendor"), BIOSVersion: a("bios_version"), BIOSDate: a("bios_date"),
	}
}

// skipDisk says which /sys/block entries are not disks anyone would install
// to: loop, RAM and compressed-RAM devices, network block devices, optical
// drives, device-mapper and MD (built on top of real disks we list anyway).
func skipDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "nbd", "sr", "dm-", "md", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func readDisks(dir string) ([]wire.Disk, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("disks: %w", err)
	}
	disks := []wire.Disk{}
	for _, e := range ents {
		name := e.Name()
		if skipDisk(name) {
			continue
		}
		d := filepath.Join(dir, name)
		sectors, _ := strconv.ParseInt(readAttr(filepath.Join(d, "size")), 10, 64)
		disk := wire.Disk{
			Name:       name,
			SizeBytes:  sectors * 512, // sysfs "size" is always in 512-byte units
			Rotational: readAttr(filepath.Join(d, "queue/rotational")) == "1",
			Removable:  readAttr(filepath.Join(d, "removable")) == "1",
			NVMe:       strings.HasPrefix(name, "nvme"),
			Model:      readAttr(filepath.Join(d, "device/model")),
		}
		// NVMe and SCSI keep the serial on the device (controller); virtio
		// keeps it on the disk itself.
		disk.Serial = readAttr(filepath.Join(d, "device/serial"))
		if disk.Serial == "" {
			disk.Serial = readAttr(filepath.Join(d, "serial"))
		}
		if disk.NVMe {
			disk.PCIAddress = pciAddress(filepath.Join(d, "device/device"))
		} else {
			disk.PCIAddress = pciAddress(filepath.Join(d, "device"))
		}
		disks = append(disks, disk)
	}
	return disks, nil
}

// pciAddress returns the PCI address a sysfs device link points at, or ""
// if it is not a PCI device. Real sysfs links end in the address
// (.../pci0000:17/0000:17:01.0/0000:18:00.0).
func pciAddress(link string) string {
	t, err := os.Readlink(link)
	if err != nil {
		return ""
	}
	b := filepath.Base(t)
	if isPCIAddress(b) {
		return b
	}
	// A virtio device (virtio-net in a VM) sits on the PCI function that
	// carries it: .../0000:00:10.0/virtio3.
	if strings.HasPrefix(b, "virtio") {
		if real, err := filepath.EvalSymlinks(link); err == nil && isPCIAddress(filepath.Base(filepath.Dir(real))) {
			return filepath.Base(filepath.Dir(real))
		}
	}
	return ""
}

func isPCIAddress(s string) bool {
	// dddd:bb:dd.f
	return len(s) == 12 && s[4] == ':' && s[7] == ':' && s[10] == '.'
}

func driverOf(dev string) string {
	t, err := os.Readlink(filepath.Join(dev, "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

func readNICs(dir string) ([]wire.NIC, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("nics: %w", err)
	}
	nics := []wire.NIC{}
	for _, e := range ents {
		d := filepath.Join(dir, e.Name())
		// Only physical interfaces have a "device" link; this drops lo,
		// bridges, bonds and other virtual ones.
		if _, err := os.Lstat(filepath.Join(d, "device")); err != nil {
			continue
		}
		n := wire.NIC{
			Name:       e.Name(),
			MAC:        readAttr(filepath.Join(d, "address")),
			Driver:     driverOf(filepath.Join(d, "device")),
			Carrier:    readAttr(filepath.Join(d, "carrier")) == "1",
			PCIAddress: pciAddress(filepath.Join(d, "device")),
		}
		// speed reads -1 (or fails with EINVAL) when the link is down.
		if s, err := strconv.Atoi(readAttr(filepath.Join(d, "speed"))); err == nil && s > 0 {
			n.SpeedMbps = s
		}
		nics = append(nics, n)
	}
	return nics, nil
}

func readPCI(dir string) ([]wire.PCIDevice, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("pci: %w", err)
	}
	devs := []wire.PCIDevice{}
	for _, e := range ents {
		d := filepath.Join(dir, e.Name())
		hex := func(n string) string {
			return strings.TrimPrefix(readAttr(filepath.Join(d, n)), "0x")
		}
		p := wire.PCIDevice{
			Address: e.Name(), VendorID: hex("vendor"), DeviceID: hex("device"), Class: hex("class"),
			SubVendorID: hex("subsystem_vendor"), SubDeviceID: hex("subsystem_device"),
			NUMANode: -1, Driver: driverOf(d),
		}
		if n, err := strconv.Atoi(readAttr(filepath.Join(d, "numa_node"))); err == nil {
			p.NUMANode = n
		}
		p.Vendor, p.Name = pciName(p.VendorID, p.DeviceID)
		devs = append(devs, p)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Address < devs[j].Address })
	return devs, nil
}

// isGPU: display controllers (class 03xxxx) and processing accelerators
// (12xxxx) from vendors that make datacentre GPUs. NVIDIA HGX boards
// present as 3D controllers (0302).
func isGPU(p wire.PCIDevice) bool {
	if !strings.HasPrefix(p.Class, "03") && !strings.HasPrefix(p.Class, "12") {
		return false
	}
	switch p.VendorID {
	case "10de", "1002", "8086":
		// Intel and AMD also make integrated/BMC graphics; only count
		// the ones our table knows as accelerators.
		return p.VendorID == "10de" || gpuIDs[p.VendorID+":"+p.DeviceID]
	}
	return false
}

func summariseGPUs(devs []wire.PCIDevice) []wire.GPUGroup {
	groups := []wire.GPUGroup{}
	idx := map[string]int{}
	for _, p := range devs {
		if !isGPU(p) {
			continue
		}
		model := p.Name
		if model == "" {
			model = p.VendorID + ":" + p.DeviceID
		}
		i, ok := idx[model]
		if !ok {
			i = len(groups)
			idx[model] = i
			groups = append(groups, wire.GPUGroup{Model: model})
		}
		groups[i].Count++
		groups[i].Addresses = append(groups[i].Addresses, p.Address)
	}
	return groups
}
