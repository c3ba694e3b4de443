package rack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/demoos"
)

// TestUpDiskBootDown brings a 2-machine rack up (one BIOS and one UEFI,
// both behind ipmi_sim), puts the demo OS on both disks, powers
// them on through the lab's power path with disk boot, and takes the rack
// down twice.
func TestUpDiskBootDown(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping virtual rack in -short mode")
	}
	cfg := Config{Machines: 2, Firmware: "mixed", BMC: "ipmi", Dir: t.TempDir()} // m01 BIOS, m02 UEFI
	if err := Available(cfg); err != nil {
		t.Skip("skipping virtual rack: ", err)
	}
	if err := demoos.Available(); err != nil {
		t.Skip("skipping virtual rack: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	img := filepath.Join(t.TempDir(), "demo.img")
	if err := demoos.Build(ctx, demoos.Options{Out: img}); err != nil {
		t.Fatal(err)
	}
	r, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Down()
	man, _ := os.ReadFile(r.Manifest)
	for _, m := range r.Machines {
		if !strings.Contains(string(man), m.MAC.String()) || !strings.Contains(string(man), m.BMCAddress) {
			t.Errorf("manifest lacks %s:\n%s", m.Name, man)
		}
		b, _ := os.ReadFile(img)
		if err := os.WriteFile(m.Disk, b, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(m.Disk, 64<<20)
		// Through the machine's BMC, as metalhall does: ipmi_sim records
		// the commands and the rack applies them to QEMU.
		host, port, _ := strings.Cut(m.BMCAddress, ":")
		for _, cmd := range [][]string{{"chassis", "bootdev", "disk"}, {"chassis", "power", "on"}} {
			args := append([]string{"-I", "lanplus", "-H", host, "-p", port, "-U", r.BMCUser, "-E", "-C", "3", "-N", "1", "-R", "3"}, cmd...)
			c := r.Command(ctx, "ipmitool", args...)
			c.Env = append(os.Environ(), "IPMI_PASSWORD="+r.BMCPassword)
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("%s: ipmitool %v: %v\n%s", m.Name, cmd, err, out)
			}
		}
	}
	for _, m := range r.Machines {
		if err := m.WaitSerial(ctx, 0, "metalhall-demo-os: starting"); err != nil {
			t.Errorf("%v\n%s", err, m.Serial(0))
		}
		// Powered on once, through the BMC, from the disk it was told
		// (ipmi_sim hands its chassis script "default" for a hard-disk
		// boot, as in lab/e2e).
		if n, dev := m.Boots(); n != 1 || (dev != "disk" && dev != "default") {
			t.Errorf("%s: %d power-ons, last from %q; want 1, from the disk", m.Name, n, dev)
		}
	}
	ns := r.NS.Name
	if err := r.Down(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		t.Errorf("namespace %s left", ns)
	}
	if err := Down(r.Dir); err != nil {
		t.Errorf("second Down: %v", err)
	}
}
