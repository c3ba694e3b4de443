package api

import (
	"net/http"

	"github.com/metalhall/metalhall/inventory"
)

// jobListRoutes: work in flight across a hall, a rack or the whole site.
func (s *Server) jobListRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/jobs", action: "job.list", summary: "List jobs (default: queued and running; state=all for every one), by hall, rack, machine, kind or state (a tenant sees its own)", roles: everyone, reply: []Job{}, handle: s.listJobs},
	}
}

func (s *Server) listJobs(c *call) (int, any, error) {
	q := c.r.URL.Query()
	f := inventory.JobFilter{Rack: q.Get("rack")}
	if k := q.Get("kind"); k != "" {
		kind, err := inventory.ParseJobKind(k)
		if err != nil {
			return 0, nil, err
		}
		f.Kind = kind
	}
	switch st := q.Get("state"); st {
	case "", "active":
		f.States = []inventory.JobState{inventory.JobQueued, inventory.JobRunning}
	case "all":
	default:
		state, err := inventory.ParseJobState(st)
		if err != nil {
			return 0, nil, err
		}
		f.States = []inventory.JobState{state}
	}
	tenant := c.tenantScope()
	// Every name given must exist (and, for a tenant, be its own): a typo
	// is not found, not an empty list.
	if f.Rack != "" {
		if tenant != "" {
			if err := s.checkTenantScope(c.ctx(), scopeRack, f.Rack, tenant); err != nil {
				return 0, nil, err
			}
		} else if _, err := s.inv.Rack(c.ctx(), f.Rack); err != nil {
			return 0, nil, err
		}
	}
	hall, machine := q.Get("hall"), q.Get("machine")
	if hall != "" {
		if _, err := s.inv.Hall(c.ctx(), hall); err != nil {
			return 0, nil, err
		}
	}
	if machine != "" {
		if tenant != "" {
			if err := s.checkTenantScope(c.ctx(), scopeMachine, machine, tenant); err != nil {
				return 0, nil, err
			}
		} else if _, err := s.inv.Machine(c.ctx(), machine); err != nil {
			return 0, nil, err
		}
		f.Machines = map[string]bool{machine: true}
	}
	held := map[string]*inventory.Machine{} // a tenant's machines, for its tenancy
	if hall != "" || tenant != "" {
		// Jobs name their machine and rack; a hall or a tenant is reached
		// through the machines.
		ms, err := s.inv.Machines(c.ctx(), inventory.MachineFilter{Hall: hall, Rack: f.Rack, Tenant: tenant})
		if err != nil {
			return 0, nil, err
		}
		in := make(map[string]bool, len(ms))
		for i, m := range ms {
			if machine == "" || m.Name == machine {
				in[m.Name] = true
				held[m.Name] = &ms[i]
			}
		}
		f.Machines = in
	}
	jobs, err := s.inv.Jobs(c.ctx(), f)
	if err != nil {
		return 0, nil, err
	}
	out := make([]Job, 0, len(jobs))
	for i := range jobs {
		// A tenant sees only its own tenancy's jobs: never those of the
		// machine's earlier tenants, with their keys and user data, nor
		// staff's from before the handover.
		if tenant != "" {
			if m := held[jobs[i].Machine]; m == nil || !c.jobVisible(&jobs[i], m) {
				continue
			}
		}
		out = append(out, s.jobView(c, &jobs[i]))
	}
	return http.StatusOK, out, nil
}
