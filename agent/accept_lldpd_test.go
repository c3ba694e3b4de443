package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
)

// TestLLDPListenerHearsRealLLDPD puts Debian's lldpd on the switch end of
// a veth pair, configured as a leaf switch would be (system name, a
// locally assigned port ID, a port description), and the agent's
// listener on the other end. What the listener reports must be what
// lldpd announces, byte for byte: the frames come from the real peer,
// not from a frame the test built.
func TestLLDPListenerHearsRealLLDPD(t *testing.T) {
	if os.Getenv("METALHALL_LLDPD_CHILD") == "1" {
		lldpdChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	lldpd, err := exec.LookPath("lldpd")
	if err != nil {
		t.Skip("lldpd not found (Debian package lldpd)")
	}
	ns := fmt.Sprintf("mh-lldpd-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, args := range [][]string{
		{"link", "add", "host0", "type", "veth", "peer", "name", "sw0"},
		{"link", "set", "host0", "up"}, {"link", "set", "sw0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	// A short directory: the control socket's path must fit in sun_path.
	dir, err := os.MkdirTemp("", "mh-lldpd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// lldpd configures itself by running lldpcli without root, which must
	// reach the control socket in here.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "leaf.conf")
	// tx-interval 1: lldpd announces every second rather than every 30,
	// so the listener hears one at once whenever it starts.
	if err := os.WriteFile(conf, []byte(`configure system hostname leaf-03
configure lldp tx-interval 1
configure ports sw0 lldp portidsubtype local Ethernet12 description "lab-m01 fab0"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, lldpd, "-d", "-u", filepath.Join(dir, "ctl"), "-p", filepath.Join(dir, "pid"),
		"-I", "sw0", "-O", conf)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting lldpd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	child := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestLLDPListenerHearsRealLLDPD$", "-test.v")
	child.Env = append(os.Environ(), "METALHALL_LLDPD_CHILD=1")
	out, err := child.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in the namespace: %v\n%s\nlldpd:\n%s", err, out, logs.String())
	}
}

func lldpdChild(t *testing.T) {
	host, err := net.InterfaceByName("host0")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := net.InterfaceByName("sw0")
	if err != nil {
		t.Fatal(err)
	}
	// The minute is a bound, not an expectation: lldpd sends every second
	// and the listener stops at the first frame it can read.
	ports := listenLLDP(context.Background(), []wire.NIC{{Name: "host0", MAC: host.HardwareAddr.String(), Carrier: true}}, time.Minute)
	if len(ports) != 1 || ports[0].Neighbor == nil {
		t.Fatalf("ports = %+v: nothing heard from lldpd", ports)
	}
	// lldpd's chassis ID is the MAC of one of its interfaces; here it has
	// only sw0.
	want := wire.LLDPNeighbor{ChassisID: sw.HardwareAddr.String(), PortID: "Ethernet12", PortDescription: "lab-m01 fab0", SystemName: "leaf-03"}
	if got := *ports[0].Neighbor; got != want {
		t.Errorf("neighbour = %+v, want %+v", got, want)
	}
}
