package provisioner

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

// dhcpPath is the service's DHCP path: the real netboot handler over the
// provisioner's adapters and a real bbolt inventory, without the engine
// running jobs (the tests move jobs by hand).
type dhcpPath struct {
	l     *lab
	addrs *Addresses
	h     *netboot.DHCPHandler
	rec   *netboot.MemoryRecorder
}

func newDHCPPath(t *testing.T) *dhcpPath {
	t.Helper()
	l := newLab(t, Config{})
	l.stop()
	p := &dhcpPath{l: l, rec: netboot.NewMemoryRecorder()}
	p.addrs = must(NewAddresses(context.Background(), l.inv, l.eng, time.Hour))
	p.h = must(netboot.NewDHCPHandler(netboot.DHCPConfig{Mode: netboot.ModeReservation, ServerIP: netip.MustParseAddr("10.7.0.1"),
		HTTPBase: "http://10.7.0.1:8280", Discovery: true, Booter: l.eng, Addresses: p.addrs, Recorder: p.rec, Logger: slog.New(slog.DiscardHandler)}))
	return p
}

// discover sends a PXE firmware's DISCOVER (x86 BIOS) and returns the
// OFFER, or nil and why there was none.
func (p *dhcpPath) discover(t *testing.T, mac net.HardwareAddr) (*dhcpv4.DHCPv4, netboot.DropReason) {
	t.Helper()
	req := must(dhcpv4.NewDiscovery(mac, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC))))
	rep, why := p.h.Handle(context.Background(), req.ToBytes(), netip.MustParseAddrPort("0.0.0.0:68"), 67)
	if rep == nil {
		return nil, why
	}
	return rep.Packet, why
}

// commissioning enrolls machine m1 and starts a commission job on it with
// the steps bmc-check, set-pxe and last, which the tests move by hand.
func (p *dhcpPath) commissioning(t *testing.T, last string) (*inventory.Machine, net.HardwareAddr, *inventory.Job) {
	t.Helper()
	ctx := context.Background()
	p.l.machine("m1", "r0", 1, inventory.MachineAvailable)
	m := must(p.l.inv.Machine(ctx, "m1"))
	steps := []inventory.JobStep{{Name: stepBMCCheck}, {Name: stepSetPXE}, {Name: last}}
	j := must(p.l.inv.StartJob(ctx, inventory.Job{Machine: "m1", Kind: inventory.JobCommission, Steps: steps}, inventory.MachineCommissioning))
	return m, must(net.ParseMAC(m.MACs[0])), j
}

func TestSubnetCreatedAfterStartServesDiscovery(t *testing.T) {
	p := newDHCPPath(t)
	unknown := net.HardwareAddr{0x02, 0, 0, 0, 0x0d, 0x01}
	if rep, why := p.discover(t, unknown); rep != nil || why != netboot.DropAddresses {
		t.Fatalf("before the subnet: %v %v", rep, why)
	}
	must(p.l.inv.CreateSubnet(context.Background(), inventory.Subnet{Name: "disc", CIDR: "10.9.0.0/24", Gateway: "10.9.0.1",
		RangeFirst: "10.9.0.100", RangeLast: "10.9.0.120"}))
	rep, why := p.discover(t, unknown)
	if rep == nil {
		t.Fatalf("after the subnet: no offer (%v)", why)
	}
	if rep.MessageType() != dhcpv4.MessageTypeOffer || rep.YourIPAddr.String() != "10.9.0.100" || rep.Router()[0].String() != "10.9.0.1" {
		t.Fatalf("offer %s", rep.Summary())
	}
}

func TestJobStepChangeIsSeenByTheNextPacket(t *testing.T) {
	p := newDHCPPath(t)
	ctx := context.Background()
	m, mac, j := p.commissioning(t, stepPowerCycle)

	// At bmc-check the machine does not boot the agent: a plain lease.
	rep, why := p.discover(t, mac)
	if rep == nil || rep.YourIPAddr.String() != m.IP || rep.BootFileName != "" {
		t.Fatalf("at %s: %v %v", stepBMCCheck, rep, why)
	}
	must(p.l.inv.UpdateJobOnly(ctx, j.ID, func(j *inventory.Job) error { j.Steps[0].State = inventory.StepDone; return nil }))
	rep, _ = p.discover(t, mac)
	if rep == nil || rep.BootFileName != "undionly.kpxe" {
		t.Fatalf("at %s: %v", stepSetPXE, rep)
	}
	// iPXE then asks for its script: the engine's answer carries the job's token.
	b := must(p.l.eng.Boot(ctx, netboot.Client{MAC: mac, UserClass: "iPXE"}))
	if b.Kind != netboot.BootProvision || !strings.Contains(b.Cmdline, "metalhall.token=ag_"+j.ID+"_") || b.Machine != "m1" {
		t.Fatalf("boot answer: %+v", b)
	}
	// Cancelled: no more agent at the next packet.
	must(p.l.inv.UpdateJobOnly(ctx, j.ID, func(j *inventory.Job) error { j.CancelRequested = true; return nil }))
	if rep, _ = p.discover(t, mac); rep == nil || rep.BootFileName != "" {
		t.Fatalf("cancelled: %v", rep)
	}
	// Events name the machine the decision was for.
	evs := p.rec.Events()
	if len(evs) == 0 || evs[len(evs)-1].Machine != "m1" {
		t.Fatalf("events %+v", evs)
	}
}

// A job's updates and DHCP packets for its machine run at once; every
// packet sees a committed step, and the last one the last step.
func TestConcurrentJobUpdatesAndPackets(t *testing.T) {
	p := newDHCPPath(t)
	ctx := context.Background()
	m, mac, j := p.commissioning(t, stepCheckProfile)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if rep, why := p.discover(t, mac); rep == nil || rep.YourIPAddr.String() != m.IP {
					t.Errorf("no offer: %v", why)
					return
				}
			}
		}()
	}
	for i := range 40 {
		must(p.l.inv.UpdateJobOnly(ctx, j.ID, func(j *inventory.Job) error {
			j.Steps[0].State = []inventory.StepState{inventory.StepDone, inventory.StepPending}[i%2]
			j.Progress.Bytes = int64(i)
			return nil
		}))
	}
	must(p.l.inv.UpdateJobOnly(ctx, j.ID, func(j *inventory.Job) error {
		j.Steps[0].State, j.Steps[1].State = inventory.StepDone, inventory.StepDone
		return nil
	}))
	close(stop)
	wg.Wait()
	if rep, _ := p.discover(t, mac); rep == nil || rep.BootFileName != "" {
		t.Fatalf("at %s the machine boots %q", stepCheckProfile, rep.BootFileName)
	}
}

// Queue positions come from the inventory's in-memory queue: they follow
// submissions and ends at once, with no job decoded.
func TestQueuePositionsFollowTheQueue(t *testing.T) {
	l := newLab(t, Config{})
	l.stop() // nothing runs: every job waits
	ctx := context.Background()
	var ids []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("m%d", i)
		l.machine(name, "r0", i, inventory.MachineAvailable)
		ids = append(ids, l.submit(Request{Kind: inventory.JobPower, Machine: name, PowerAction: "on"}).ID)
	}
	for i, id := range ids {
		if got := l.eng.QueuePosition(ctx, id); got != i+1 {
			t.Errorf("%s at %d, want %d", id, got, i+1)
		}
	}
	if _, _, err := l.inv.UpdateJob(ctx, ids[0], func(j *inventory.Job, m *inventory.Machine) error {
		j.State = inventory.JobCancelled
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if a, b, c := l.eng.QueuePosition(ctx, ids[0]), l.eng.QueuePosition(ctx, ids[1]), l.eng.QueuePosition(ctx, ids[2]); a != 0 || b != 1 || c != 2 {
		t.Errorf("after the first ended: %d %d %d, want 0 1 2", a, b, c)
	}
}
