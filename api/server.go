// Package api is metalhall's HTTP JSON API: routing, authentication by
// token, roles and tenant scope, the audit trail, metrics, and the Go
// client the CLI uses.
//
// Every route is declared once, in a table (routes.go), with the roles it
// admits and the kind of object it acts on. Authentication, authorization,
// tenant scoping, body limits, error mapping, audit and metrics all happen
// in one wrapper around the table's handlers, never in a handler by hand.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
)

// DefaultMaxBody caps request bodies (uploads have their own routes).
const DefaultMaxBody = 1 << 20

// Config is what the API needs.
type Config struct {
	Store   *inventory.Store
	Sealer  *seal.Sealer
	Logger  *slog.Logger
	MaxBody int64
	// Registry receives the API's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// Provisioner runs jobs; nil answers job requests with 503.
	Provisioner Provisioner
	// BMC reads power states and sets boot devices; nil answers those with 503.
	BMC BMC
	// Images imports and deletes images; nil answers those with 503.
	Images ImageStore
	// Backups writes backup archives; nil answers them with 503.
	Backups Backups
	// Profiles holds the hardware profiles; nil answers those with 503
	// and checks no manifest's profiles.
	Profiles Profiles
	// RefusalAuditEvery is how often at most one audit record sums up the
	// requests refused for want of a valid token [1m].
	RefusalAuditEvery time.Duration
	// ConsoleIdle ends a serial console session after this long with
	// nothing typed or printed [DefaultConsoleIdle].
	ConsoleIdle time.Duration
}

// Server serves the API.
type Server struct {
	inv     *inventory.Store
	sealer  *seal.Sealer
	log     *slog.Logger
	maxBody int64
	routes  []route
	mux     *http.ServeMux
	reg     *prometheus.Registry
	prov    Provisioner
	bmc     BMC
	images  ImageStore
	backups Backups
	// profiles: see Config.Profiles.
	profiles Profiles

	consoleIdle time.Duration

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// eventWaits: see newEventWaits.
	eventWaits prometheus.Gauge

	touchMu  sync.Mutex
	touched  map[string]time.Time // token ID → last recorded use
	touching sync.WaitGroup       // token uses being recorded (Close waits)
	closed   bool                 // under touchMu: Close was called, record no more

	refused *refusals

	// waits ends when the service shuts down: long polls end with it.
	waits     context.Context
	stopWaits context.CancelFunc
}

// New builds the API server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Sealer == nil {
		return nil, errors.New("api: Store and Sealer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &Server{inv: cfg.Store, sealer: cfg.Sealer, log: cfg.Logger, maxBody: cfg.MaxBody,
		mux: http.NewServeMux(), reg: cfg.Registry, touched: map[string]time.Time{},
		prov: cfg.Provisioner, bmc: cfg.BMC, images: cfg.Images, backups: cfg.Backups, profiles: cfg.Profiles, consoleIdle: cfg.ConsoleIdle}
	s.waits, s.stopWaits = context.WithCancel(context.Background())
	if s.consoleIdle <= 0 {
		s.consoleIdle = DefaultConsoleIdle
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metalhall_api_requests_total", Help: "API requests by route and status code.",
	}, []string{"route", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "metalhall_api_request_duration_seconds", Help: "API request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
	}, []string{"route"})
	if err := s.reg.Register(s.requests); err != nil {
		return nil, err
	}
	if err := s.reg.Register(s.latency); err != nil {
		return nil, err
	}
	if err := s.reg.Register(&stateCollector{inv: s.inv}); err != nil {
		return nil, err
	}
	if err := s.reg.Register(&bmcCollector{inv: s.inv}); err != nil {
		return nil, err
	}
	if err := s.reg.Register(&sensorCollector{inv: s.inv}); err != nil {
		return nil, err
	}
	if err := s.reg.Register(&powerCollector{inv: s.inv}); err != nil {
		return nil, err
	}
	// Counted where the store writes; read at scrape time.
	if err := s.reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "metalhall_store_write_transactions_total",
		Help: "bbolt write transactions since the service started (shared batch transactions count once).",
	}, func() float64 { return float64(s.inv.WriteTransactions()) })); err != nil {
		return nil, err
	}
	if cfg.RefusalAuditEvery <= 0 {
		cfg.RefusalAuditEvery = time.Minute
	}
	var err error
	if s.refused, err = newRefusals(s.reg, cfg.RefusalAuditEvery); err != nil {
		return nil, err
	}
	if s.eventWaits, err = newEventWaits(s.reg); err != nil {
		return nil, err
	}
	s.routes = s.table()
	for _, rt := range s.routes {
		s.mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, Health{Status: "ok"})
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.OpenAPI())
	})
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, Error{Message: fmt.Sprintf("no API route %s %s: see /api/v1/openapi.json", r.Method, r.URL.Path), Code: "not_found"})
	})
	return s, nil
}

// Handler is the API's root handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Handle mounts another handler on the API's mux (the netboot and image
// servers share the listener).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// scope says what kind of object a route's {name} is, so the wrapper can
// hide other tenants' objects.
type scope int

const (
	scopeNone scope = iota
	scopeMachine
	scopeRack
	scopeImage // private images are their tenant's; shared ones everyone's
)

// route is one API operation.
type route struct {
	method, pattern string
	action          string // audit action and OpenAPI operationId, e.g. "machine.enroll"
	summary         string
	roles           roleSet
	scope           scope
	body            any   // request body type, for OpenAPI; nil for none
	reply           any   // response type, for OpenAPI
	replies         []any // other response types, to some bodies (machine.power: a PowerStatus to "status")
	raw             bool  // writes its own body
	audited         bool  // audited even though it changes nothing (reads of sensitive data)
	handle          func(c *call) (int, any, error)
}

// call is one request in flight.
type call struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	p       Principal
	subject string // what the request is about, for the audit trail
	detail  string
	// outOfScope: a tenant asked for an object that is not its own (or
	// does not exist): audited as a refusal, unlike a 404 about something
	// missing on its own object (a machine with no job).
	outOfScope bool
}

// tenantScope is the tenant whose objects a list must be limited to: the
// caller's own for tenant tokens, none for staff.
func (c *call) tenantScope() string {
	if c.p.Role == inventory.RoleTenant {
		return c.p.Tenant
	}
	return ""
}

func (c *call) ctx() context.Context { return c.r.Context() }

// decode reads a JSON body strictly: unknown fields, trailing data and
// bodies over the limit are refused.
func (c *call) decode(v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.w, c.r.Body, c.s.maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return badRequest("request body is empty: send a JSON object")
		}
		if strings.HasPrefix(err.Error(), "json: unknown field") {
			return badRequest("%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return err
	}
	if dec.More() {
		return badRequest("request body has data after the JSON object")
	}
	return nil
}

// statusWriter remembers the status for metrics and audit.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap is the one place where every request is authenticated, authorized,
// scoped to its tenant, answered, measured and audited.
func (s *Server) wrap(rt route) http.Handler {
	mutating := rt.method != http.MethodGet && rt.method != http.MethodHead
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		c := &call{s: s, w: sw, r: r}
		if name := r.PathValue("name"); name != "" {
			c.subject = subjectOf(rt, name)
			// A name no object can have is refused before anything else
			// happens, and nothing is written about it.
			if err := inventory.CheckSubject(c.subject); err != nil {
				writeJSON(sw, http.StatusBadRequest, Error{Message: fmt.Sprintf("the name in the path is not a valid name: %v", err), Code: "bad_request"})
				s.requests.WithLabelValues(rt.pattern, fmt.Sprint(sw.status)).Inc()
				return
			}
		}
		status, body, err := s.serve(c, rt)
		outcome := "ok"
		if err != nil {
			code, errCode, msg := classify(err)
			if code == http.StatusInternalServerError || code == http.StatusServiceUnavailable {
				s.log.Error("request failed", "route", rt.action, "subject", c.subject, "err", err)
			}
			status, body = code, Error{Message: msg, Code: errCode}
			outcome, c.detail = "refused", msg
			if code >= 500 {
				outcome = "failed"
			}
		}
		if sw.status == 0 { // raw handlers write their own bodies
			writeJSON(sw, status, body)
		}
		s.requests.WithLabelValues(rt.pattern, fmt.Sprint(sw.status)).Inc()
		s.latency.WithLabelValues(rt.pattern).Observe(time.Since(start).Seconds())
		if sw.status == http.StatusUnauthorized {
			s.refused.note(s, rt)
			return
		}
		refusedAccess := sw.status == http.StatusForbidden || c.outOfScope
		if mutating || rt.audited || refusedAccess {
			s.audit(c, rt, outcome)
		}
	})
}

func subjectOf(rt route, name string) string {
	switch rt.scope {
	case scopeMachine:
		return "machine/" + name
	case scopeRack:
		return "rack/" + name
	case scopeImage:
		return "image/" + name
	}
	kind, _, _ := strings.Cut(rt.action, ".")
	return kind + "/" + name
}

func (s *Server) serve(c *call, rt route) (int, any, error) {
	p, err := s.authenticate(c.r)
	if err != nil {
		return 0, nil, err
	}
	c.p = p
	if !rt.roles.has(p.Role) {
		return 0, nil, forbidden(fmt.Sprintf("a %s token may not %s (allowed: %s)", p.Role, rt.action, strings.Join(rt.roles.names(), ", ")))
	}
	if p.Role == inventory.RoleTenant && rt.scope != scopeNone {
		if err := s.checkTenantScope(c.ctx(), rt.scope, c.r.PathValue("name"), p.Tenant); err != nil {
			c.outOfScope = true
			return 0, nil, err
		}
	}
	return rt.handle(c)
}

// checkTenantScope hides what is not the tenant's: another tenant's machine
// is "not found", exactly like one that does not exist.
func (s *Server) checkTenantScope(ctx context.Context, sc scope, name, tenant string) error {
	switch sc {
	case scopeMachine:
		m, err := s.inv.Machine(ctx, name)
		if err != nil || m.Tenant != tenant {
			return notFound("machine", name)
		}
	case scopeRack:
		r, err := s.inv.Rack(ctx, name)
		if err != nil || r.Tenant != tenant {
			return notFound("rack", name)
		}
	case scopeImage:
		if _, err := s.inv.ImageFor(ctx, tenant, name); err != nil {
			return notFound("image", name)
		}
	}
	return nil
}

var errUnauthorized = &httpError{http.StatusUnauthorized, "unauthorized",
	"missing or invalid token: pass --token or set METALHALL_TOKEN (the first admin token is in DATA_DIR/admin.token)"}

func (s *Server) authenticate(r *http.Request) (Principal, error) {
	h := r.Header.Get("Authorization")
	raw, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return Principal{}, errUnauthorized
	}
	id, hash, ok := parseToken(strings.TrimSpace(raw))
	if !ok {
		return Principal{}, errUnauthorized
	}
	t, err := s.inv.Authenticate(r.Context(), id, hash)
	var expired *inventory.ExpiredError
	if errors.As(err, &expired) {
		return Principal{}, &httpError{http.StatusUnauthorized, "token_expired", expired.Error()}
	}
	if err != nil {
		return Principal{}, errUnauthorized
	}
	s.touch(r.Context(), id)
	return Principal{TokenID: t.ID, Role: t.Role, Tenant: t.Tenant}, nil
}

// Close waits for what the server records behind its requests (token
// uses); call it after the HTTP server has shut down, before the store
// closes.
func (s *Server) Close() error {
	s.touchMu.Lock()
	s.closed = true
	s.touchMu.Unlock()
	s.touching.Wait()
	return nil
}

// touch records a token's last use at most once a minute, so reads do not
// turn into a write each.
func (s *Server) touch(ctx context.Context, id string) {
	now := time.Now()
	s.touchMu.Lock()
	last, seen := s.touched[id]
	if (seen && now.Sub(last) < time.Minute) || s.closed {
		s.touchMu.Unlock()
		return
	}
	s.touched[id] = now
	s.touching.Add(1)
	s.touchMu.Unlock()
	// Behind the request, not in it: a store that cannot commit (an etcd
	// cluster without quorum) must not hold up reads it can answer. At
	// most one per token per minute runs, by the check above.
	go func() {
		defer s.touching.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := s.inv.TouchToken(ctx, id, now); err != nil {
			s.log.Warn("recording token use", "token", id, "err", err)
		}
	}()
}

func (s *Server) audit(c *call, rt route, outcome string) {
	actor := c.p.TokenID
	if actor == "" {
		actor = "anonymous"
	}
	subject := safeSubject(c.subject)
	if subject == "" {
		subject = "api"
	}
	ev := inventory.Event{Actor: actor, Role: string(c.p.Role), Tenant: c.p.Tenant, Subject: subject,
		Action: rt.action, Outcome: outcome, Detail: c.detail}
	// The audit write must outlive a client that hung up.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx()), 5*time.Second)
	defer cancel()
	if _, err := s.inv.AppendEvent(ctx, ev); err != nil {
		s.log.Error("audit event lost", "action", rt.action, "subject", subject, "err", err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v == nil {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// stateCollector exports machines and racks by state at scrape time.
type stateCollector struct{ inv *inventory.Store }

var (
	machinesDesc = prometheus.NewDesc("metalhall_machines", "Machines by lifecycle state.", []string{"state"}, nil)
	racksDesc    = prometheus.NewDesc("metalhall_racks", "Racks by lifecycle state.", []string{"state"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- machinesDesc; ch <- racksDesc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	machines, racks, err := c.inv.Counts(ctx)
	if err != nil {
		return
	}
	for _, st := range inventory.MachineStates() {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(machines[st]), string(st))
	}
	for _, st := range inventory.RackStates() {
		ch <- prometheus.MustNewConstMetric(racksDesc, prometheus.GaugeValue, float64(racks[st]), string(st))
	}
}
