package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metalhall/metalhall/inventory"
)

// What a tenant sees of machines, jobs and events: only its own tenancy's
// jobs and events, and nothing of staff — BMC addresses and users, staff
// token IDs, other tenants.

// viewMachine is a machine as the caller may see it.
func (c *call) viewMachine(m inventory.Machine) Machine {
	out := machineView(m)
	if c.p.Role == inventory.RoleTenant {
		out.BMC = inventory.BMC{}
		out.BMCStatus.LastError = ""
		if fw := out.BMCFirmware; fw != nil && fw.Error != "" {
			// The error quotes the BMC's address: a copy without it.
			cp := *fw
			cp.Error = hideBMC(&m, cp.Error)
			out.BMCFirmware = &cp
		}
		out.Reason = hideBMC(&m, out.Reason)
		if m.PowerLimit != nil {
			pl := *m.PowerLimit
			pl.Detail = hideBMC(&m, pl.Detail)
			out.PowerLimit = &pl
		}
	}
	return out
}

// hideBMC takes a machine's BMC address out of text a tenant reads:
// failure reasons and event details quote it ("BMC 10.1.7.7 refused the
// credentials").
func hideBMC(m *inventory.Machine, s string) string {
	addr := m.BMC.Address
	if addr == "" || s == "" {
		return s
	}
	host := strings.TrimPrefix(strings.TrimPrefix(addr, "https://"), "http://")
	host = strings.TrimSuffix(host, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, v := range []string{addr, strings.TrimSuffix(addr, "/"), host} {
		if v != "" {
			s = strings.ReplaceAll(s, v, "(BMC)")
		}
	}
	return s
}

// instanceMention is how the provisioner names a service instance in the
// text of a job's events ("taken over from instance cp-2-7f3a by instance
// cp-1-09bc"). Instance IDs are the operator's control-node host names
// (cluster.Join), which a tenant has no need to know.
var instanceMention = regexp.MustCompile(`\binstance ([^\s,;:()]+)`)

// namesInstances are the provisioner's events whose text names instances
// (provisioner/steps.go): only theirs is rewritten, so that a word after
// "instance" in any other text is left alone.
var namesInstances = map[string]bool{"job.taken-over": true, "step.resumed": true}

// hideInstances replaces the instance IDs a text names, everywhere it
// names them, by their order of appearance ("instance #1 ... #1 stopped
// answering"), so that the sentence still says which instance did what.
func hideInstances(s string) string {
	found := instanceMention.FindAllStringSubmatch(s, -1)
	if found == nil {
		return s
	}
	var ids []string
	for _, m := range found {
		if !slices.Contains(ids, m[1]) {
			ids = append(ids, m[1])
		}
	}
	for i, id := range ids {
		// Whole words only: an ID is also named bare ("after cp-2 stopped
		// answering"), and must not be replaced inside another word.
		word := regexp.MustCompile(`(^|[\s(])` + regexp.QuoteMeta(id) + `([\s,;:)]|$)`)
		// Twice: a match takes the space after the ID with it, so a
		// mention right after another is left for the second pass.
		for range 2 {
			s = word.ReplaceAllString(s, "${1}#"+strconv.Itoa(i+1)+"${2}")
		}
	}
	return s
}

// hideBMCInJob takes the BMC address out of a job's errors for a tenant.
func hideBMCInJob(m *inventory.Machine, j *Job) {
	j.Error, j.AgentError = hideBMC(m, j.Error), hideBMC(m, j.AgentError)
	steps := make([]inventory.JobStep, len(j.Steps))
	for i, st := range j.Steps {
		st.Error, st.Detail = hideBMC(m, st.Error), hideBMC(m, st.Detail)
		steps[i] = st
	}
	j.Steps = steps
}

// staffActor stands in for a staff token ID in what a tenant sees.
const staffActor = "operator"

// viewEvents keeps, for a tenant, only events it may see — not another
// tenant's requests — with staff token IDs replaced and BMC addresses of
// the machines (by subject) taken out; staff see all.
func (c *call) viewEvents(evs []inventory.Event, machines ...inventory.Machine) []inventory.Event {
	if c.p.Role != inventory.RoleTenant {
		return nonNil(evs)
	}
	out := make([]inventory.Event, 0, len(evs))
	for _, e := range evs {
		if e.Tenant != "" && e.Tenant != c.p.Tenant {
			continue
		}
		switch inventory.Role(e.Role) {
		case inventory.RoleAdmin, inventory.RoleTechnician:
			e.Actor, e.Role = staffActor, ""
		}
		for i := range machines {
			if e.Subject == "machine/"+machines[i].Name {
				e.Detail = hideBMC(&machines[i], e.Detail)
			}
		}
		if namesInstances[e.Action] {
			e.Detail = hideInstances(e.Detail)
		}
		out = append(out, e)
	}
	return out
}

// jobVisible reports whether the caller may see a job: staff see every
// job; a tenant only its machine's current tenancy's.
func (c *call) jobVisible(j *inventory.Job, m *inventory.Machine) bool {
	return c.p.Role != inventory.RoleTenant || (j.Tenancy != "" && j.Tenancy == m.Tenancy)
}

// checkTenantJob refuses what a tenant may not start: imaging a machine
// that failed (it must be commissioned again, which checks its hardware).
func (c *call) checkTenantJob(m *inventory.Machine, kind inventory.JobKind) error {
	if c.p.Role != inventory.RoleTenant || kind != inventory.JobProvision || m.State != inventory.MachineFailed {
		return nil
	}
	return &inventory.ConflictError{Msg: fmt.Sprintf("machine %q failed at step %s (%s): it must be commissioned again before it is imaged; ask your operator",
		m.Name, orDash(m.FailedStep), m.Reason)}
}

// checkTenantCancel refuses a tenant cancelling a job it did not ask for:
// staff jobs (commissioning, a staff release) and other tenancies' jobs.
func (c *call) checkTenantCancel(j *inventory.Job, m *inventory.Machine) error {
	if c.p.Role != inventory.RoleTenant {
		return nil
	}
	if !c.jobVisible(j, m) || j.ActorRole != inventory.RoleTenant {
		return forbidden(fmt.Sprintf("machine %q: its %s job %s was started by the operator; only the operator may cancel it", m.Name, j.Kind, j.ID))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// tenantAssignment reads an assign or unassign request: exactly one of a
// rack or a machine, and the tenant named in the path.
func (s *Server) tenantAssignment(c *call) (TenantAssign, string, error) {
	var in TenantAssign
	if err := c.decode(&in); err != nil {
		return in, "", err
	}
	tenant := c.r.PathValue("name")
	if (in.Rack == "") == (in.Machine == "") {
		return in, "", badRequest("give exactly one of rack or machine")
	}
	_, err := s.inv.Tenant(c.ctx(), tenant)
	return in, tenant, err
}

func (s *Server) unassignTenant(c *call) (int, any, error) {
	in, tenant, err := s.tenantAssignment(c)
	if err != nil {
		return 0, nil, err
	}
	if in.Rack != "" {
		c.subject, c.detail = "rack/"+in.Rack, "from tenant "+tenant
		_, err = s.inv.UnassignRackTenant(c.ctx(), in.Rack, tenant)
		return http.StatusOK, in, err
	}
	c.subject, c.detail = "machine/"+in.Machine, "from tenant "+tenant
	_, err = s.inv.UnassignMachineTenant(c.ctx(), in.Machine, tenant)
	return http.StatusOK, in, err
}

// tenantAudit is a tenant's own audit view: its own requests, and what
// anyone did to its machines in their current tenancy, staff token IDs
// left out.
func (s *Server) tenantAudit(c *call, f inventory.EventFilter) ([]inventory.Event, error) {
	f, ms, err := s.eventScope(c, f)
	if err != nil {
		return nil, err
	}
	if asked := append(slices.Clone(f.Actors), f.Actor); len(asked) > 1 || asked[0] != "" {
		// Staff token IDs are not shown to tenants, so they cannot be
		// asked for either: only the tenant's own tokens.
		tokens, err := s.inv.Tokens(c.ctx())
		if err != nil {
			return nil, err
		}
		var own []string
		for _, t := range tokens {
			if t.Tenant == c.p.Tenant && slices.Contains(asked, t.ID) {
				own = append(own, t.ID)
			}
		}
		if len(own) == 0 {
			return []inventory.Event{}, nil
		}
		f.Actor, f.Actors = "", own
	}
	evs, err := s.inv.Events(c.ctx(), f)
	return c.viewEvents(evs, ms...), err
}

// refusals counts requests refused for want of a valid token. They cost a
// counter increment each, and at most one audit record per interval says
// how many there were: anything on a provisioning network can send them,
// and one fsynced write each would let it grow the database without bound.
type refusals struct {
	every   time.Duration
	counter *prometheus.CounterVec

	mu      sync.Mutex
	pending int
	since   time.Time
	written time.Time
}

func newRefusals(reg *prometheus.Registry, every time.Duration) (*refusals, error) {
	r := &refusals{every: every, counter: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metalhall_api_unauthenticated_total",
		Help: "API requests refused for want of a valid token, by route.",
	}, []string{"route"})}
	return r, reg.Register(r.counter)
}

// note counts one refusal and, when the interval has passed since the
// last record, writes one record for all counted since.
func (r *refusals) note(s *Server, rt route) {
	r.counter.WithLabelValues(rt.pattern).Inc()
	now := time.Now()
	r.mu.Lock()
	if r.pending == 0 {
		r.since = now
	}
	r.pending++
	if now.Sub(r.written) < r.every {
		r.mu.Unlock()
		return
	}
	n, since := r.pending, r.since
	r.pending, r.written = 0, now
	r.mu.Unlock()
	ev := inventory.Event{Actor: "anonymous", Subject: "api", Action: "auth.refused", Outcome: "refused",
		Detail: fmt.Sprintf("%d requests without a valid token refused since %s (counted in metalhall_api_unauthenticated_total)", n, since.UTC().Format(time.RFC3339))}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.inv.AppendEvent(ctx, ev); err != nil {
		s.log.Error("audit event lost", "action", ev.Action, "err", err)
	}
}

// safeSubject makes a subject the store accepts out of one built from a
// request's body: control characters escaped and the length capped, so
// that the refusal of a bad name is still audited.
func safeSubject(subject string) string {
	if inventory.CheckSubject(subject) == nil {
		return subject
	}
	q := strconv.QuoteToASCII(subject)
	if len(q) > 120 {
		q = q[:120] + "…"
	}
	return q
}

// DefaultTokenTTL is how long a token works when its creator does not
// say: the more it may do, the shorter. The bootstrap admin token, which
// the service writes at first start, does not expire.
var DefaultTokenTTL = map[inventory.Role]time.Duration{
	inventory.RoleAdmin:      30 * 24 * time.Hour,
	inventory.RoleTechnician: 90 * 24 * time.Hour,
	inventory.RoleTenant:     365 * 24 * time.Hour,
}

// maxTokenTTL bounds what may be asked for.
const maxTokenTTL = 5 * 365 * 24 * time.Hour

// tokenTTL reads a TTL ("720h", "90d"), or the role's default for "".
func tokenTTL(role inventory.Role, s string) (time.Duration, error) {
	if s == "" {
		if d, ok := DefaultTokenTTL[role]; ok {
			return d, nil
		}
		return 0, &inventory.ValidationError{Field: "role", Msg: fmt.Sprintf("%q is not a role: use admin, technician or tenant", role)}
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && (n < 0 || n > int(maxTokenTTL/(24*time.Hour))) {
			n = -1 // out of range, said below
		}
		if err != nil {
			return 0, &inventory.ValidationError{Field: "ttl", Msg: fmt.Sprintf("%q is not a duration: use e.g. 90d or 720h", s)}
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, &inventory.ValidationError{Field: "ttl", Msg: fmt.Sprintf("%q is not a duration: use e.g. 90d or 720h", s)}
		}
	}
	if d < time.Minute || d > maxTokenTTL {
		return 0, &inventory.ValidationError{Field: "ttl", Msg: fmt.Sprintf("%q is out of range: between 1m and %dd", s, int(maxTokenTTL/(24*time.Hour)))}
	}
	return d, nil
}
