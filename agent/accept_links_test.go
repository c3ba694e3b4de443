package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// A virtio NIC's device link names the virtio device, not the PCI
// function under it; the inspection must still give the PCI address, or
// a cabling plan by PCI address never matches a VM's NIC.
func TestVirtioNICHasThePCIAddressOfItsFunction(t *testing.T) {
	root := t.TempDir()
	fn := filepath.Join(root, "devices", "pci0000:00", "0000:00:10.0")
	if err := os.MkdirAll(filepath.Join(fn, "virtio3", "net", "eth1"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(fn, "virtio3", "net", "eth1", "device")
	if err := os.Symlink("../../../virtio3", link); err != nil {
		t.Fatal(err)
	}
	if got := pciAddress(link); got != "0000:00:10.0" {
		t.Errorf("pciAddress = %q, want 0000:00:10.0", got)
	}
}
