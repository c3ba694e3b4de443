package api

import (
	"encoding/json"
	"net/http"

	"github.com/metalhall/metalhall/agent/wire"
)

// RackCabling is every Ethernet port of a rack's machines with what its
// latest inspection heard over LLDP: the observed cables.
type RackCabling struct {
	Rack  string  `json:"rack"`
	Ports []Cable `json:"ports"`
}

// Cable is one machine port and the switch port at its other end.
type Cable struct {
	Machine    string `json:"machine"`
	Unit       int    `json:"unit"`
	Interface  string `json:"interface"`
	PCIAddress string `json:"pci_address,omitempty"`
	MAC        string `json:"mac"`
	// Status: connected (a neighbour was heard), no-link, silent (link
	// but no LLDP heard).
	Status          string `json:"status"`
	Switch          string `json:"switch,omitempty"` // LLDP system name, or the chassis ID without one
	SwitchChassisID string `json:"switch_chassis_id,omitempty"`
	SwitchPort      string `json:"switch_port,omitempty"`
	PortDescription string `json:"port_description,omitempty"`
}

func (s *Server) cablingRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/racks/{name}/cabling", action: "rack.cabling",
			summary: "The cables observed over LLDP at each machine's latest commissioning, port by port",
			roles:   staff, scope: scopeRack, reply: RackCabling{}, handle: s.rackCabling},
		{method: "PUT", pattern: "/api/v1/racks/{name}/cabling", action: "rack.cabling-plan",
			summary: "Set the cabling plan of a rack's machines from a cable schedule in NetBox's cable CSV (side_a_device, side_a_name, side_b_device, side_b_name): all or nothing",
			roles:   staff, scope: scopeRack, body: "cables", reply: CablingPlanResult{}, handle: s.setCablingPlan},
	}
}

func (s *Server) rackCabling(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	ms, _, err := s.rackReports(c, name)
	if err != nil {
		return 0, nil, err
	}
	reports, err := s.rackInspections(c, ms)
	if err != nil {
		return 0, nil, err
	}
	out := RackCabling{Rack: name, Ports: []Cable{}}
	for _, m := range ms {
		var inv wire.Inventory
		if r := reports[m.Name]; len(r) == 0 || json.Unmarshal(r, &inv) != nil || inv.Hardware == nil {
			continue
		}
		for _, p := range inv.Hardware.LLDP {
			cb := Cable{Machine: m.Name, Unit: m.Unit, Interface: p.Interface, PCIAddress: p.PCIAddress, MAC: p.MAC, Status: "silent"}
			switch {
			case !p.Carrier:
				cb.Status = "no-link"
			case p.Neighbor != nil:
				n := p.Neighbor
				cb.Status, cb.Switch, cb.SwitchChassisID, cb.SwitchPort, cb.PortDescription = "connected", n.SystemName, n.ChassisID, n.PortID, n.PortDescription
				if cb.Switch == "" {
					cb.Switch = n.ChassisID
				}
			}
			out.Ports = append(out.Ports, cb)
		}
	}
	return http.StatusOK, out, nil
}
