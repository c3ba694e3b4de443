package provisioner

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// railPlan is the cable schedule of one 8-GPU server in a rail-optimised
// fabric, as a manifest gives it: each of four fabric NICs to its rail's
// leaf, the same port number on every leaf, NICs named every way a plan
// may name them.
var railPlan = []inventory.PlannedCable{
	{NIC: "ens3f0", Switch: "leaf-03", Port: "Ethernet12"},
	{NIC: "0000:17:00.1", Switch: "leaf-04", Port: "Ethernet12"},
	{NIC: "0c:42:a1:9a:00:00", Switch: "leaf-05", Port: "Ethernet12"},
	{NIC: "ens4f1", Switch: "0c:42:a1:00:06:00", Port: "Ethernet12"}, // by chassis ID
}

func leaf(name, chassis, port string) *wire.LLDPNeighbor {
	return &wire.LLDPNeighbor{ChassisID: chassis, SystemName: name, PortID: port}
}

// railPorts is what the agent hears on that server when every cable is
// where the plan says, plus the management port on a switch the plan
// does not name.
func railPorts() []wire.LLDPPort {
	return []wire.LLDPPort{
		{Interface: "eno1", PCIAddress: "0000:c1:00.0", MAC: "3c:ec:ef:8a:2b:10", Carrier: true, Neighbor: leaf("mgmt-01", "00:1c:73:00:00:01", "Ethernet33")},
		{Interface: "ens3f0", PCIAddress: "0000:17:00.0", MAC: "0c:42:a1:17:00:00", Carrier: true, Neighbor: leaf("leaf-03", "0c:42:a1:00:03:00", "Ethernet12")},
		{Interface: "ens3f1", PCIAddress: "0000:17:00.1", MAC: "0c:42:a1:17:00:01", Carrier: true, Neighbor: leaf("leaf-04", "0c:42:a1:00:04:00", "Ethernet12")},
		// lldpd's default: the port ID is a MAC, its name is the description.
		{Interface: "ens4f0", PCIAddress: "0000:9a:00.0", MAC: "0c:42:a1:9a:00:00", Carrier: true,
			Neighbor: &wire.LLDPNeighbor{ChassisID: "0c:42:a1:00:05:00", SystemName: "leaf-05", PortID: "0c:42:a1:00:05:0c", PortDescription: "Ethernet12"}},
		{Interface: "ens4f1", PCIAddress: "0000:9a:00.1", MAC: "0c:42:a1:9a:00:01", Carrier: true, Neighbor: leaf("", "0c:42:a1:00:06:00", "Ethernet12")},
	}
}

func cablingReport(t *testing.T, profile string, ports []wire.LLDPPort, plan []inventory.PlannedCable) inventory.AcceptanceReport {
	t.Helper()
	inv := agentInventory(t, "hgx-h100")
	inv.Hardware.LLDP = ports
	return AcceptPlanned(loadProfile(t, profile), inv, plan)
}

const cablingProfile = "acceptance:\n  cabling: {listen_seconds: 35}\n"

func TestCablingAsPlannedPasses(t *testing.T) {
	r := cablingReport(t, cablingProfile, railPorts(), railPlan)
	if !r.Passed {
		t.Fatalf("fix list %q", r.Failures())
	}
	want := "4 of 4 planned cables as planned; 5 of 5 Ethernet ports heard a neighbour: eno1 sees mgmt-01 Ethernet33, ens3f0 sees leaf-03 Ethernet12, ens3f1 sees leaf-04 Ethernet12, ens4f0 sees leaf-05 Ethernet12, ens4f1 sees 0c:42:a1:00:06:00 Ethernet12"
	if s := r.Checks[1].Summary; s != want {
		t.Errorf("summary\n %q\nwant\n %q", s, want)
	}
}

// Each way a cable can be wrong gives its own precise line, and only
// the cables that are wrong give one.
func TestCablingNamesEachMismatchDeadLinkAndUnplannedNeighbour(t *testing.T) {
	for name, tc := range map[string]struct {
		break_ func(ps []wire.LLDPPort) []wire.LLDPPort
		plan   []inventory.PlannedCable
		want   []string
	}{
		"two NICs swapped": {
			break_: func(ps []wire.LLDPPort) []wire.LLDPPort {
				ps[1].Neighbor, ps[2].Neighbor = ps[2].Neighbor, ps[1].Neighbor
				return ps
			},
			want: []string{
				"ens3f0 (0000:17:00.0) sees leaf-04 Ethernet12; plan: leaf-03 Ethernet12 — move the cable to leaf-03 Ethernet12 (leaf-04 Ethernet12 is planned for 0000:17:00.1)",
				"ens3f1 (0000:17:00.1) sees leaf-03 Ethernet12; plan: leaf-04 Ethernet12 — move the cable to leaf-04 Ethernet12 (leaf-03 Ethernet12 is planned for ens3f0)",
			},
		},
		"right switch, wrong port": {
			break_: func(ps []wire.LLDPPort) []wire.LLDPPort { ps[1].Neighbor.PortID = "Ethernet13"; return ps },
			want:   []string{"ens3f0 (0000:17:00.0) sees leaf-03 Ethernet13; plan: leaf-03 Ethernet12 — move the cable to leaf-03 Ethernet12"},
		},
		"dead link": {
			break_: func(ps []wire.LLDPPort) []wire.LLDPPort { ps[3].Carrier, ps[3].Neighbor = false, nil; return ps },
			want:   []string{"ens4f0 (0000:9a:00.0) has no link; plan: leaf-05 Ethernet12 — check the cable and leaf-05 Ethernet12"},
		},
		"link but no LLDP": {
			break_: func(ps []wire.LLDPPort) []wire.LLDPPort { ps[4].Neighbor = nil; return ps },
			want:   []string{"ens4f1 (0000:9a:00.1) heard no LLDP within 35 s; plan: 0c:42:a1:00:06:00 Ethernet12 — check LLDP is enabled on 0c:42:a1:00:06:00 Ethernet12"},
		},
		"planned NIC missing": {
			break_: func(ps []wire.LLDPPort) []wire.LLDPPort { return ps[:4] },
			want:   []string{"planned NIC ens4f1 is not on the machine; plan: 0c:42:a1:00:06:00 Ethernet12 — check the NIC is fitted and enabled in the BIOS, or correct the cabling plan"},
		},
		"unplanned NIC into the fabric": {
			// ens4f1 is left out of the plan, and its cable goes to a
			// planned leaf: a finding. eno1 on the management switch the
			// plan does not name is only recorded.
			break_: func(ps []wire.LLDPPort) []wire.LLDPPort {
				ps[4].Neighbor = leaf("leaf-03", "0c:42:a1:00:03:00", "Ethernet14")
				return ps
			},
			plan: railPlan[:3],
			want: []string{"ens4f1 (0000:9a:00.1) sees leaf-03 Ethernet14, which the cabling plan does not list for this machine — unplug that cable, or add it to the cabling plan"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			plan := tc.plan
			if plan == nil {
				plan = railPlan
			}
			r := cablingReport(t, cablingProfile, tc.break_(railPorts()), plan)
			if r.Passed || !reflect.DeepEqual(r.Failures(), tc.want) {
				t.Errorf("fix list\n %q\nwant\n %q", r.Failures(), tc.want)
			}
		})
	}
}

func TestCablingWithoutAPlanOnlyRecordsNeighbours(t *testing.T) {
	ps := railPorts()
	ps[1].Neighbor, ps[2].Neighbor = ps[2].Neighbor, ps[1].Neighbor
	r := cablingReport(t, cablingProfile, ps, nil)
	if !r.Passed || !strings.HasPrefix(r.Checks[1].Summary, "5 of 5 Ethernet ports heard a neighbour: eno1 sees mgmt-01 Ethernet33, ens3f0 sees leaf-04 Ethernet12") {
		t.Errorf("passed %v, summary %q", r.Passed, r.Checks[1].Summary)
	}
}

// A profile that names cabling optional keeps the findings in the report
// but lets the machine through: cabling is advisory there.
func TestOptionalCablingIsAdvisory(t *testing.T) {
	ps := railPorts()
	ps[1].Neighbor, ps[2].Neighbor = ps[2].Neighbor, ps[1].Neighbor
	r := cablingReport(t, cablingProfile+"  optional: [cabling]\n", ps, railPlan)
	if c := r.Checks[1]; !r.Passed || c.Required || c.Result != inventory.CheckFailed || len(c.Findings) != 2 || len(r.Failures()) != 0 {
		t.Errorf("passed %v, check %+v, fix list %q", r.Passed, c, r.Failures())
	}
}

// Commissioning judges the agent's LLDP report against the plan stored
// on the machine, and a miscabled machine fails with both lines.
func TestCommissionChecksTheMachinesCablingPlan(t *testing.T) {
	l := newLab(t, Config{Profiles: profiles{"hgx-h100": loadProfile(t, cablingProfile)}})
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		inv := agentInventory(t, "hgx-h100")
		ps := railPorts()
		ps[1].Neighbor, ps[2].Neighbor = ps[2].Neighbor, ps[1].Neighbor
		inv.Hardware.LLDP = ps
		a.call("POST", wire.EndpointInspection, inv, nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	must(l.inv.UpdateMachine(context.Background(), "m1", func(m *inventory.Machine) error {
		m.Cabling = railPlan
		return nil
	}))
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	if j.State != inventory.JobFailed || !strings.Contains(j.Error, "ens3f0 (0000:17:00.0) sees leaf-04 Ethernet12; plan: leaf-03 Ethernet12") ||
		!strings.Contains(j.Error, "ens3f1 (0000:17:00.1) sees leaf-03 Ethernet12; plan: leaf-04 Ethernet12") {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if m := must(l.inv.Machine(context.Background(), "m1")); m.State != inventory.MachineFailed {
		t.Errorf("machine %s, want failed", m.State)
	}
}
