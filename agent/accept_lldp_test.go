package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/agent/wire"
)

// lldpFrame builds the LLDPDU a switch sends: chassis ID as a MAC, port
// ID as an interface name, TTL, port description, system name, end.
func lldpFrame(src net.HardwareAddr, chassis net.HardwareAddr, port, desc, sysname string) []byte {
	f := append([]byte{}, lldpMulticast[:]...)
	f = append(f, src...)
	f = binary.BigEndian.AppendUint16(f, ethPLLDP)
	tlv := func(typ int, v []byte) {
		f = binary.BigEndian.AppendUint16(f, uint16(typ<<9|len(v)))
		f = append(f, v...)
	}
	tlv(tlvChassisID, append([]byte{chassisSubtypeMAC}, chassis...))
	tlv(tlvPortID, append([]byte{5}, port...))
	tlv(3, []byte{0, 120})
	tlv(tlvPortDesc, []byte(desc))
	tlv(tlvSystemName, []byte(sysname))
	tlv(tlvEnd, nil)
	return f
}

func TestLLDPFrameGivesTheSwitchAndPort(t *testing.T) {
	src, _ := net.ParseMAC("0c:42:a1:00:00:0c")
	chassis, _ := net.ParseMAC("0c:42:a1:00:00:00")
	nb, err := parseLLDP(lldpFrame(src, chassis, "Ethernet12", "to gpu-a01-05 eno1", "leaf-03"))
	if err != nil {
		t.Fatal(err)
	}
	want := wire.LLDPNeighbor{ChassisID: "0c:42:a1:00:00:00", PortID: "Ethernet12", PortDescription: "to gpu-a01-05 eno1", SystemName: "leaf-03"}
	if *nb != want {
		t.Errorf("neighbor = %+v, want %+v", *nb, want)
	}
}

func TestLLDPRejectsBrokenFrames(t *testing.T) {
	src, _ := net.ParseMAC("0c:42:a1:00:00:0c")
	good := lldpFrame(src, src, "Ethernet12", "", "leaf-03")
	for name, f := range map[string][]byte{
		"short":       good[:10],
		"not LLDP":    append(append([]byte{}, good[:12]...), 0x08, 0x00),
		"cut TLV":     good[:len(good)-5],
		"no port ID":  append(append([]byte{}, good[:14]...), good[14:14+9]...),
		"length past": append(append([]byte{}, good[:14]...), 0x02, 0xff, 0x05),
	} {
		if nb, err := parseLLDP(f); err == nil {
			t.Errorf("%s: parsed as %+v", name, nb)
		}
	}
}

// TestLLDPListenerHearsASwitchOnARealLink runs in a network namespace of
// its own (the test binary re-runs itself under `ip netns exec`), with a
// veth pair: one end plays the switch and sends LLDP frames through a raw
// socket, the agent listens on the other. A third port without carrier is
// reported dead, not listened on.
func TestLLDPListenerHearsASwitchOnARealLink(t *testing.T) {
	if os.Getenv("METALHALL_LLDP_CHILD") == "1" {
		lldpChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	ns := fmt.Sprintf("mh-lldp-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, args := range [][]string{
		{"link", "add", "agent0", "type", "veth", "peer", "name", "leaf0"},
		{"link", "add", "dead0", "type", "veth", "peer", "name", "dead1"},
		{"link", "set", "agent0", "up"}, {"link", "set", "leaf0", "up"}, {"link", "set", "dead0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestLLDPListenerHearsASwitchOnARealLink$", "-test.v")
	cmd.Env = append(os.Environ(), "METALHALL_LLDP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
}

func lldpChild(t *testing.T) {
	leaf, err := net.InterfaceByName("leaf0")
	if err != nil {
		t.Fatal(err)
	}
	agent, _ := net.InterfaceByName("agent0")
	dead, _ := net.InterfaceByName("dead0")
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(ethPLLDP)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	chassis, _ := net.ParseMAC("0c:42:a1:00:00:00")
	frame := lldpFrame(leaf.HardwareAddr, chassis, "Ethernet12", "gpu-a01-05 eno1", "leaf-03")
	to := &unix.SockaddrLinklayer{Protocol: htons(ethPLLDP), Ifindex: leaf.Index, Halen: 6}
	copy(to.Addr[:], lldpMulticast[:])

	// The switch announces until the agent is done listening, as a real
	// one would every 30 s; the agent stops at its first frame.
	done := make(chan []wire.LLDPPort)
	go func() {
		nics := []wire.NIC{
			{Name: "agent0", MAC: agent.HardwareAddr.String(), Carrier: true},
			{Name: "dead0", MAC: dead.HardwareAddr.String(), Carrier: false},
			{Name: "ibp25s0", MAC: "00:00:10:29:fe:80:00:00:00:00:00:00:a0:88:c2:03:00:5e:1a:b0", Carrier: true},
		}
		done <- listenLLDP(context.Background(), nics, time.Minute)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var ports []wire.LLDPPort
	for ports == nil {
		select {
		case ports = <-done:
		case <-tick.C:
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				t.Fatalf("sending LLDP: %v", err)
			}
		}
	}
	if len(ports) != 2 {
		t.Fatalf("ports = %+v (InfiniBand must be left out)", ports)
	}
	want := wire.LLDPNeighbor{ChassisID: "0c:42:a1:00:00:00", PortID: "Ethernet12", PortDescription: "gpu-a01-05 eno1", SystemName: "leaf-03"}
	if p := ports[0]; p.Interface != "agent0" || p.Neighbor == nil || *p.Neighbor != want || p.Error != "" {
		t.Errorf("agent0 = %+v", p)
	}
	if p := ports[1]; p.Interface != "dead0" || p.Carrier || p.Neighbor != nil {
		t.Errorf("dead0 = %+v", p)
	}
}
