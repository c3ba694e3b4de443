package api

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// routeTable is every API operation, with who may call it (CLI.md, Roles).
// Tenants get only the machine and rack operations scoped to them.
func (s *Server) routeTable() []route {
	return []route{
		{method: "POST", pattern: "/api/v1/sites", action: "site.create", summary: "Create a site", roles: staff, body: SiteCreate{}, reply: inventory.Site{}, handle: s.createSite},
		{method: "GET", pattern: "/api/v1/sites", action: "site.list", summary: "List sites", roles: staff, reply: []inventory.Site{}, handle: s.listSites},
		{method: "POST", pattern: "/api/v1/halls", action: "hall.create", summary: "Create a hall in a site", roles: staff, body: HallCreate{}, reply: inventory.Hall{}, handle: s.createHall},
		{method: "GET", pattern: "/api/v1/halls", action: "hall.list", summary: "List halls", roles: staff, reply: []inventory.Hall{}, handle: s.listHalls},
		{method: "GET", pattern: "/api/v1/halls/{name}/capacity", action: "hall.capacity", summary: "Power budget, allocation and installed power per phase", roles: staff, reply: inventory.HallCapacity{}, handle: s.hallCapacity},
		{method: "POST", pattern: "/api/v1/halls/{name}/phases", action: "phase.create", summary: "Add a commissioning phase to a hall", roles: staff, body: PhaseCreate{}, reply: inventory.Phase{}, handle: s.createPhase},
		{method: "GET", pattern: "/api/v1/halls/{name}/phases", action: "phase.list", summary: "List a hall's phases with their budgets, allocation and rated vs measured power", roles: staff, reply: []PhaseView{}, handle: s.listPhases},
		{method: "POST", pattern: "/api/v1/halls/{name}/phases/{number}/state", action: "phase.set-state", summary: "Move a phase to planned, commissioning or live", roles: staff, body: StateChange{}, reply: inventory.Phase{}, handle: s.setPhaseState},

		{method: "POST", pattern: "/api/v1/racks", action: "rack.create", summary: "Create a rack in a hall phase", roles: staff, body: RackCreate{}, reply: inventory.Rack{}, handle: s.createRack},
		{method: "GET", pattern: "/api/v1/racks", action: "rack.list", summary: "List racks (a tenant sees its own)", roles: everyone, reply: []inventory.Rack{}, handle: s.listRacks},
		{method: "GET", pattern: "/api/v1/racks/{name}", action: "rack.show", summary: "A rack with its machines and usage", roles: everyone, scope: scopeRack, reply: RackDetail{}, handle: s.showRack},
		{method: "POST", pattern: "/api/v1/racks/{name}/state", action: "rack.set-state", summary: "Move a rack through its lifecycle", roles: staff, scope: scopeRack, body: StateChange{}, reply: inventory.Rack{}, handle: s.setRackState},
		{method: "DELETE", pattern: "/api/v1/racks/{name}", action: "rack.delete", summary: "Remove an empty rack", roles: staff, scope: scopeRack, handle: s.deleteRack},
		{method: "POST", pattern: "/api/v1/racks/import", action: "rack.import", summary: "Import a rack manifest (YAML or CSV): all or nothing", roles: staff, body: "manifest", reply: inventory.ImportResult{}, handle: s.importRack},

		{method: "POST", pattern: "/api/v1/machines", action: "machine.enroll", summary: "Enroll a machine in a rack", roles: staff, body: MachineEnroll{}, reply: Machine{}, handle: s.enrollMachine},
		{method: "GET", pattern: "/api/v1/machines", action: "machine.list", summary: "List machines (a tenant sees its own)", roles: everyone, reply: []Machine{}, handle: s.listMachines},
		{method: "GET", pattern: "/api/v1/machines/{name}", action: "machine.show", summary: "One machine", roles: everyone, scope: scopeMachine, reply: Machine{}, handle: s.showMachine},
		{method: "POST", pattern: "/api/v1/machines/{name}/maintenance", action: "machine.maintenance", summary: "Put a machine in or out of maintenance", roles: staff, scope: scopeMachine, body: MaintenanceRequest{}, reply: Machine{}, handle: s.maintenance},
		{method: "GET", pattern: "/api/v1/machines/{name}/events", action: "machine.events", summary: "A machine's events (after=SEQ to follow)", roles: everyone, scope: scopeMachine, reply: []inventory.Event{}, handle: s.machineEvents},
		{method: "DELETE", pattern: "/api/v1/machines/{name}", action: "machine.delete", summary: "Remove a machine that is not in use", roles: staff, scope: scopeMachine, handle: s.deleteMachine},

		{method: "POST", pattern: "/api/v1/subnets", action: "subnet.create", summary: "Create a provisioning subnet", roles: staff, body: SubnetCreate{}, reply: inventory.Subnet{}, handle: s.createSubnet},
		{method: "GET", pattern: "/api/v1/subnets", action: "subnet.list", summary: "List subnets", roles: staff, reply: []inventory.Subnet{}, handle: s.listSubnets},

		{method: "POST", pattern: "/api/v1/tenants", action: "tenant.create", summary: "Create a tenant", roles: admin, body: TenantCreate{}, reply: inventory.Tenant{}, handle: s.createTenant},
		{method: "GET", pattern: "/api/v1/tenants", action: "tenant.list", summary: "List tenants", roles: staff, reply: []inventory.Tenant{}, handle: s.listTenants},
		{method: "POST", pattern: "/api/v1/tenants/{name}/assign", action: "tenant.assign", summary: "Hand a rack or a machine to a tenant", roles: staff, body: TenantAssign{}, reply: TenantAssign{}, handle: s.assignTenant},
		{method: "POST", pattern: "/api/v1/tenants/{name}/unassign", action: "tenant.unassign", summary: "Take a released rack or machine back from a tenant", roles: staff, body: TenantAssign{}, reply: TenantAssign{}, handle: s.unassignTenant},

		{method: "POST", pattern: "/api/v1/tokens", action: "token.create", summary: "Create a token (its secret is shown once)", roles: admin, body: TokenCreate{}, reply: TokenCreated{}, handle: s.createToken},
		{method: "GET", pattern: "/api/v1/tokens", action: "token.list", summary: "List tokens", roles: admin, reply: []Token{}, handle: s.listTokens},
		{method: "DELETE", pattern: "/api/v1/tokens/{name}", action: "token.revoke", summary: "Revoke a token", roles: admin, reply: Token{}, handle: s.revokeToken},

		{method: "GET", pattern: "/api/v1/audit", action: "audit.list", summary: "The audit trail, newest limit events (since=RFC3339, actor=TOKEN_ID (repeatable), action, outcome, tenant, limit; after=SEQ pages forward, before=SEQ back); a tenant sees its own requests and what was done to its machines", roles: admin | tenant, reply: []inventory.Event{}, handle: s.listAudit},
		{method: "GET", pattern: "/api/v1/backup", action: "backup", summary: "A consistent copy of the database", roles: admin, raw: true, audited: true, handle: s.backup},
	}
}

func (s *Server) createSite(c *call) (int, any, error) {
	var in SiteCreate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.subject = "site/" + in.Name
	out, err := s.inv.CreateSite(c.ctx(), inventory.Site{Name: in.Name, Description: in.Description})
	return http.StatusCreated, out, err
}

func (s *Server) listSites(c *call) (int, any, error) {
	out, err := s.inv.Sites(c.ctx())
	return http.StatusOK, nonNil(out), err
}

func (s *Server) createHall(c *call) (int, any, error) {
	var in HallCreate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.subject = "hall/" + in.Name
	out, err := s.inv.CreateHall(c.ctx(), inventory.Hall{Name: in.Name, Site: in.Site})
	return http.StatusCreated, out, err
}

func (s *Server) listHalls(c *call) (int, any, error) {
	site := c.r.URL.Query().Get("site")
	if site != "" {
		// An unknown site is not found, like an unknown hall or rack filter.
		if _, err := s.inv.Site(c.ctx(), site); err != nil {
			return 0, nil, err
		}
	}
	out, err := s.inv.Halls(c.ctx(), site)
	return http.StatusOK, nonNil(out), err
}

func (s *Server) hallCapacity(c *call) (int, any, error) {
	out, err := s.inv.HallCapacity(c.ctx(), c.r.PathValue("name"))
	return http.StatusOK, out, err
}

func (s *Server) createPhase(c *call) (int, any, error) {
	var in PhaseCreate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	hall := c.r.PathValue("name")
	c.subject = fmt.Sprintf("hall/%s/phase/%d", hall, in.Number)
	w, err := inventory.KWToW("power_kw", in.PowerKW)
	if err != nil {
		return 0, nil, err
	}
	out, err := s.inv.CreatePhase(c.ctx(), inventory.Phase{Hall: hall, Number: in.Number, BudgetW: w, TargetDate: in.TargetDate})
	return http.StatusCreated, out, err
}

func (s *Server) listPhases(c *call) (int, any, error) {
	hall := c.r.PathValue("name")
	ps, err := s.inv.Phases(c.ctx(), hall)
	if err != nil {
		return 0, nil, err
	}
	capacity, err := s.inv.HallCapacity(c.ctx(), hall)
	if err != nil {
		return 0, nil, err
	}
	byNumber := map[int]inventory.PhaseCapacity{}
	for _, pc := range capacity.Phases {
		byNumber[pc.Phase] = pc
	}
	out := make([]PhaseView, 0, len(ps))
	for _, p := range ps {
		pc := byNumber[p.Number]
		out = append(out, PhaseView{Phase: p, AllocatedW: pc.AllocatedW, Power: pc.Power})
	}
	return http.StatusOK, out, nil
}

func (s *Server) setPhaseState(c *call) (int, any, error) {
	hall := c.r.PathValue("name")
	n, err := strconv.Atoi(c.r.PathValue("number"))
	if err != nil {
		return 0, nil, badRequest("phase number %q is not a number", c.r.PathValue("number"))
	}
	c.subject = fmt.Sprintf("hall/%s/phase/%d", hall, n)
	var in StateChange
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.detail = "to " + in.To
	out, err := s.inv.SetPhaseState(c.ctx(), hall, n, inventory.PhaseState(in.To))
	return http.StatusOK, out, err
}

func (s *Server) createRack(c *call) (int, any, error) {
	var in RackCreate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.subject = "rack/" + in.Name
	w, err := inventory.KWToW("power_kw", in.PowerKW)
	if err != nil {
		return 0, nil, err
	}
	out, err := s.inv.CreateRack(c.ctx(), inventory.Rack{Name: in.Name, Hall: in.Hall, Phase: in.Phase, Row: in.Row, Units: in.Units, BudgetW: w})
	return http.StatusCreated, out, err
}

func (s *Server) listRacks(c *call) (int, any, error) {
	q := c.r.URL.Query()
	f := inventory.RackFilter{Hall: q.Get("hall"), State: inventory.RackState(q.Get("state")), Tenant: c.tenantScope()}
	if p := q.Get("phase"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return 0, nil, badRequest("phase %q is not a phase number", p)
		}
		f.Phase = n
	}
	out, err := s.inv.Racks(c.ctx(), f)
	return http.StatusOK, nonNil(out), err
}

func (s *Server) showRack(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	r, err := s.inv.Rack(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	u, err := s.inv.RackUsage(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	ms, err := s.inv.Machines(c.ctx(), inventory.MachineFilter{Rack: name, Tenant: c.tenantScope()})
	if err != nil {
		return 0, nil, err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Unit > ms[j].Unit })
	out := RackDetail{Rack: *r, Usage: *u, Machines: []Machine{}}
	if c.tenantScope() == "" {
		if out.Power, err = s.inv.RackPower(c.ctx(), name); err != nil {
			return 0, nil, err
		}
	}
	for _, m := range ms {
		out.Machines = append(out.Machines, c.viewMachine(m))
	}
	if err := s.withInspections(c.ctx(), out.Machines); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out, nil
}

func (s *Server) setRackState(c *call) (int, any, error) {
	var in StateChange
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.detail = "to " + in.To
	out, err := s.inv.SetRackState(c.ctx(), c.r.PathValue("name"), inventory.RackState(in.To))
	return http.StatusOK, out, err
}

func (s *Server) deleteRack(c *call) (int, any, error) {
	return http.StatusNoContent, nil, s.inv.DeleteRack(c.ctx(), c.r.PathValue("name"))
}

func (s *Server) enrollMachine(c *call) (int, any, error) {
	var in MachineEnroll
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.subject = "machine/" + in.Name
	e, err := s.enrollment(in)
	if err != nil {
		return 0, nil, err
	}
	if err := s.checkMachineProfile(c.ctx(), in.Name, in.Profile); err != nil {
		return 0, nil, err
	}
	m, err := s.inv.EnrollMachine(c.ctx(), e)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, machineView(*m), nil
}

// maxBMCPassword caps BMC passwords (IPMI 2.0 takes 20 bytes, Redfish
// services rarely more than 64): each is sealed, on every import.
const maxBMCPassword = 256

// enrollment validates an enrollment request and seals its BMC password
// before anything reaches the store.
func (s *Server) enrollment(in MachineEnroll) (inventory.Enrollment, error) {
	m := inventory.Machine{Name: in.Name, Rack: in.Rack, Unit: in.Unit, Height: in.Height, MACs: in.MACs,
		BMC: inventory.BMC{Address: in.BMCAddress, Protocol: inventory.BMCProtocol(in.BMCProtocol), Username: in.BMCUser,
			System: in.BMCSystem, Auth: in.BMCAuth, BootMode: in.BMCBootMode},
		PowerW: in.PowerW, Profile: in.Profile, IP: in.IP}
	if err := inventory.ValidateMachine(&m); err != nil {
		return inventory.Enrollment{}, err
	}
	if in.BMCPassword == "" {
		return inventory.Enrollment{}, &inventory.ValidationError{Field: "bmc_password", Msg: "is required (pass --bmc-password-file)"}
	}
	if len(in.BMCPassword) > maxBMCPassword {
		return inventory.Enrollment{}, &inventory.ValidationError{Field: "bmc_password",
			Msg: fmt.Sprintf("is %d bytes long, more than the %d any BMC takes: check the password file", len(in.BMCPassword), maxBMCPassword)}
	}
	sealed, err := inventory.BMCCredential(m.Name).Seal(s.sealer, []byte(in.BMCPassword))
	if err != nil {
		return inventory.Enrollment{}, err
	}
	return inventory.Enrollment{Machine: m, SealedPassword: sealed}, nil
}

func (s *Server) listMachines(c *call) (int, any, error) {
	q := c.r.URL.Query()
	f := inventory.MachineFilter{Rack: q.Get("rack"), Hall: q.Get("hall"), State: inventory.MachineState(q.Get("state")), Tenant: q.Get("tenant")}
	if t := c.tenantScope(); t != "" {
		if f.Tenant != "" && f.Tenant != t {
			// Another tenant does not exist for this one: the same answer
			// as for an unknown rack.
			return 0, nil, notFound("tenant", f.Tenant)
		}
		f.Tenant = t
		if f.Rack != "" {
			if err := s.checkTenantScope(c.ctx(), scopeRack, f.Rack, t); err != nil {
				return 0, nil, err
			}
		}
	}
	if f.Tenant != "" && c.tenantScope() == "" {
		// An unknown tenant is not found, like an unknown rack, not an
		// empty list that hides a typo.
		if _, err := s.inv.Tenant(c.ctx(), f.Tenant); err != nil {
			return 0, nil, err
		}
	}
	ms, err := s.inv.Machines(c.ctx(), f)
	out := make([]Machine, 0, len(ms))
	for _, m := range ms {
		out = append(out, c.viewMachine(m))
	}
	if err == nil {
		err = s.withInspections(c.ctx(), out)
	}
	return http.StatusOK, out, err
}

func (s *Server) showMachine(c *call) (int, any, error) {
	m, err := s.inv.Machine(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	out := []Machine{c.viewMachine(*m)}
	if err := s.withInspections(c.ctx(), out); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out[0], nil
}

func (s *Server) maintenance(c *call) (int, any, error) {
	var in MaintenanceRequest
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.detail = fmt.Sprintf("on=%v %s", in.On, in.Reason)
	m, err := s.inv.SetMaintenance(c.ctx(), c.r.PathValue("name"), in.On, in.Reason)
	if err != nil {
		return 0, nil, err
	}
	out := []Machine{machineView(*m)}
	if err := s.withInspections(c.ctx(), out); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out[0], nil
}

func (s *Server) machineEvents(c *call) (int, any, error) {
	q := c.r.URL.Query()
	f := inventory.EventFilter{Subject: "machine/" + c.r.PathValue("name")}
	if a := q.Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			return 0, nil, badRequest("after %q is not an event sequence number", a)
		}
		f.After = n
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			return 0, nil, badRequest("limit %q must be between 1 and 10000", l)
		}
		f.Limit = n
	}
	// An unknown name is not found, like everywhere else, not an empty
	// list: refused requests about it leave events, so "none" cannot tell.
	// A deleted machine's history stays in the audit trail.
	m, err := s.inv.Machine(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	var seen []inventory.Machine
	if c.p.Role == inventory.RoleTenant {
		// Only this tenancy's events: not those of the machine's earlier
		// tenants, nor of staff before it was handed over.
		if m.Tenancy == "" {
			return http.StatusOK, []inventory.Event{}, nil
		}
		f.Tenancy, seen = m.Tenancy, []inventory.Machine{*m}
	}
	out, err := s.inv.Events(c.ctx(), f)
	return http.StatusOK, nonNil(c.viewEvents(out, seen...)), err
}

func (s *Server) deleteMachine(c *call) (int, any, error) {
	return http.StatusNoContent, nil, s.inv.DeleteMachine(c.ctx(), c.r.PathValue("name"))
}

func (s *Server) createSubnet(c *call) (int, any, error) {
	var in SubnetCreate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.subject = "subnet/" + in.Name
	sn := inventory.Subnet{Name: in.Name, CIDR: in.CIDR, Gateway: in.Gateway, DNS: in.DNS}
	var err error
	if sn.RangeFirst, sn.RangeLast, err = splitRange(in.Range); err != nil {
		return 0, nil, err
	}
	out, err := s.inv.CreateSubnet(c.ctx(), sn)
	return http.StatusCreated, out, err
}

func (s *Server) listSubnets(c *call) (int, any, error) {
	out, err := s.inv.Subnets(c.ctx())
	return http.StatusOK, nonNil(out), err
}

func (s *Server) createTenant(c *call) (int, any, error) {
	var in TenantCreate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.subject = "tenant/" + in.Name
	out, err := s.inv.CreateTenant(c.ctx(), inventory.Tenant{Name: in.Name, Description: in.Description})
	return http.StatusCreated, out, err
}

func (s *Server) listTenants(c *call) (int, any, error) {
	out, err := s.inv.Tenants(c.ctx())
	return http.StatusOK, nonNil(out), err
}

func (s *Server) assignTenant(c *call) (int, any, error) {
	in, tenant, err := s.tenantAssignment(c)
	if err != nil {
		return 0, nil, err
	}
	if in.Rack != "" {
		c.subject, c.detail = "rack/"+in.Rack, "to tenant "+tenant
		_, err := s.inv.AssignRackTenant(c.ctx(), in.Rack, tenant)
		return http.StatusOK, in, err
	}
	c.subject, c.detail = "machine/"+in.Machine, "to tenant "+tenant
	_, err = s.inv.AssignMachineTenant(c.ctx(), in.Machine, tenant)
	return http.StatusOK, in, err
}

func (s *Server) createToken(c *call) (int, any, error) {
	var in TokenCreate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	ttl, err := tokenTTL(inventory.Role(in.Role), in.TTL)
	if err != nil {
		return 0, nil, err
	}
	secret, t, err := newToken(c.ctx(), s.inv, inventory.Token{Role: inventory.Role(in.Role), Tenant: in.Tenant, Label: in.Label,
		ExpiresAt: time.Now().Add(ttl).UTC()})
	if err != nil {
		return 0, nil, err
	}
	c.subject, c.detail = "token/"+t.ID, "role "+in.Role
	return http.StatusCreated, TokenCreated{Token: tokenView(*t), Secret: secret}, nil
}

func (s *Server) listTokens(c *call) (int, any, error) {
	ts, err := s.inv.Tokens(c.ctx())
	out := make([]Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenView(t))
	}
	return http.StatusOK, out, err
}

func (s *Server) revokeToken(c *call) (int, any, error) {
	t, err := s.inv.RevokeToken(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, tokenView(*t), nil
}

func (s *Server) listAudit(c *call) (int, any, error) {
	f, err := auditFilter(c.r.URL.Query())
	if err != nil {
		return 0, nil, err
	}
	if c.p.Role == inventory.RoleTenant {
		out, err := s.tenantAudit(c, f)
		return http.StatusOK, out, err
	}
	out, err := s.inv.Events(c.ctx(), f)
	return http.StatusOK, nonNil(out), err
}

func (s *Server) backup(c *call) (int, any, error) {
	c.w.Header().Set("Content-Type", "application/octet-stream")
	c.w.Header().Set("Content-Disposition", `attachment; filename="metalhall.db"`)
	c.w.WriteHeader(http.StatusOK)
	if _, err := s.inv.Backup(c.w); err != nil {
		// The status is sent: all we can do is cut the stream short, which
		// the client sees as a truncated body and refuses.
		s.log.Error("backup stream failed", "err", err)
		panic(http.ErrAbortHandler)
	}
	return http.StatusOK, nil, nil
}

// nonNil makes empty lists encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
