package api

import (
	"net/http"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// EraseReport is a machine's erase certificates: one per release, each
// with a record per disk (method, NIST SP 800-88 level, result, times,
// verification), oldest first.
type EraseReport struct {
	Machine string         `json:"machine"`
	Reports []EraseRelease `json:"reports"`
}

// EraseRelease is what one release erased.
type EraseRelease struct {
	Job string `json:"job"`
	// Tenant is the machine's tenant when it was erased; shown to staff
	// only.
	Tenant   string             `json:"tenant,omitempty"`
	Reported time.Time          `json:"reported"`
	Passed   bool               `json:"passed"` // every disk erased and verified
	Disks    []wire.EraseRecord `json:"disks"`
}

func (s *Server) eraseRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/machines/{name}/erase-report", action: "machine.erase-report",
			summary: "A machine's erase certificates: per release, each disk's method, NIST 800-88 level, result and verification",
			roles:   everyone, scope: scopeMachine, reply: EraseReport{}, handle: s.eraseReport},
	}
}

// eraseReport shows staff every release's report, and a tenant those of
// its own tenancy: the proof its data was destroyed, and nothing about
// who had the machine before or after.
func (s *Server) eraseReport(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	reps, err := s.inv.EraseReports(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	out := EraseReport{Machine: name, Reports: []EraseRelease{}}
	for _, r := range reps {
		if c.p.Role == inventory.RoleTenant && r.Tenant != c.p.Tenant {
			continue
		}
		v := EraseRelease{Job: r.Job, Reported: r.Reported, Passed: r.Passed(), Disks: r.Disks}
		if c.p.Role != inventory.RoleTenant {
			v.Tenant = r.Tenant
		}
		out.Reports = append(out.Reports, v)
	}
	return http.StatusOK, out, nil
}
