package rack

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFabricLeavesAnnounceThePortsAsCabled brings up a rack with two
// fabric NICs per machine and lab-m02's two fabric cables swapped, powers
// nothing on, and plays each machine's NIC on its taps: every tap must
// carry its leaf's LLDP announcement — the leaf and port it is cabled to,
// swapped for lab-m02 — while the manifest keeps the plan as designed.
func TestFabricLeavesAnnounceThePortsAsCabled(t *testing.T) {
	cfg := Config{Machines: 2, Firmware: "bios", BMC: "redfish", Dir: t.TempDir(), FabricNICs: 2, Miscabled: []string{"lab-m02"}}
	if err := Available(cfg); err != nil {
		t.Skip("skipping virtual rack: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Down()
	man, _ := os.ReadFile(r.Manifest)
	for _, want := range []string{
		`- {nic: "0000:00:10.0", switch: leaf-01, port: Ethernet1}`, `- {nic: "0000:00:11.0", switch: leaf-02, port: Ethernet1}`,
		`- {nic: "0000:00:10.0", switch: leaf-01, port: Ethernet2}`, `- {nic: "0000:00:11.0", switch: leaf-02, port: Ethernet2}`,
	} {
		if !strings.Contains(string(man), want) {
			t.Errorf("manifest lacks %s:\n%s", want, man)
		}
	}
	for _, c := range []struct {
		tap, leaf, port string
	}{
		{"mhf0-0", "leaf-01", "Ethernet1"}, {"mhf0-1", "leaf-02", "Ethernet1"},
		{"mhf1-0", "leaf-02", "Ethernet2"}, {"mhf1-1", "leaf-01", "Ethernet2"}, // swapped
	} {
		frame, err := r.lldpOnTap(ctx, c.tap)
		if err != nil {
			t.Fatalf("%s: %v", c.tap, err)
		}
		if !bytes.Contains(frame, []byte(c.leaf)) || !bytes.Contains(frame, []byte(c.port)) {
			t.Errorf("%s hears %q, want %s %s", c.tap, frame[14:], c.leaf, c.port)
		}
	}
	ns := r.NS.Name
	if err := r.Down(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leafSocketDir(ns)); err == nil {
		t.Errorf("%s left", leafSocketDir(ns))
	}
}

// lldpOnTap attaches to a tap as QEMU does (which gives it carrier) and
// returns the first LLDP frame the leaf sends down it.
func (r *Rack) lldpOnTap(ctx context.Context, tap string) ([]byte, error) {
	var f *os.File
	if err := r.NS.Run(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(tap)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), tap)
		return nil
	}); err != nil {
		return nil, err
	}
	defer f.Close()
	// A bound, not an expectation: the leaf announces every second.
	deadline, _ := ctx.Deadline()
	f.SetReadDeadline(deadline)
	buf := make([]byte, 2048)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return nil, errors.Join(errors.New("no LLDP frame"), err)
		}
		if n > 14 && buf[12] == 0x88 && buf[13] == 0xcc {
			return buf[:n], nil
		}
	}
}
