package bmc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/bmc-toolbox/bmclib/v2/providers/ipmitool"
	bmcredfish "github.com/bmc-toolbox/bmclib/v2/providers/redfish"
	"github.com/go-logr/logr"
	"github.com/jacobweinstock/registrar"
	"github.com/stmcginnis/gofish"
)

// Config tunes a Controller. Zero values get the defaults noted.
type Config struct {
	// MaxConcurrent bounds operations in flight across all BMCs
	// (default 64). Each BMC additionally runs one operation at a time.
	MaxConcurrent int
	// OpTimeout bounds one attempt of one operation: login, command(s),
	// logout (default 30s).
	OpTimeout time.Duration
	// PollInterval is how often SetPower reads the power state while
	// waiting for it to change (default 2s).
	PollInterval time.Duration
	// PowerTimeout is how long SetPower waits for the machine to reach the
	// requested state after the command (default 3m: a graceful shutdown
	// takes the OS's time).
	PowerTimeout time.Duration
	// BootVerifyDelay is waited between setting a boot override and
	// reading it back (default 0). Some BMCs revert an override they
	// accepted a moment later.
	BootVerifyDelay time.Duration
	// Retries is how many times a transient failure (timeout, refused
	// connection, HTTP 5xx) is retried (default 2; negative: none). Wrong
	// credentials are never retried.
	Retries int
	// Backoff is the wait before the first retry; it doubles each time,
	// with jitter (default 1s).
	Backoff time.Duration
	// Logger gets one line per failed attempt and operation. Default:
	// discard. Passwords are never logged.
	Logger *slog.Logger
	// IPMIToolPath is the ipmitool binary; empty: looked up on PATH.
	IPMIToolPath string

	// registry, when set, replaces bmclib's providers (tests: a fake
	// driver through bmclib.WithRegistry).
	registry func(Endpoint) *registrar.Registry
}

// Controller runs BMC operations with bounded concurrency, per-BMC
// serialisation, deadlines and retries. It is safe for concurrent use.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	sem      chan struct{}
	locks    addrLocks
	ipmitool string
	ipmiErr  error
	metrics  *metrics
	targets  redfishTargets
	conns    *httpConns
}

// New returns a Controller. It never fails: a missing ipmitool is reported
// by CheckIPMITool and by every IPMI operation.
func New(cfg Config) *Controller {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 30 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	if cfg.PowerTimeout <= 0 {
		cfg.PowerTimeout = 3 * time.Minute
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	} else if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		cfg: cfg,
		log: cfg.Logger,
		sem: make(chan struct{}, cfg.MaxConcurrent),
	}
	c.locks.m = make(map[string]*addrLock)
	c.metrics = newMetrics(c)
	// Idle connections beyond the operations that can run at once are
	// kept for BMCs whose next operation is on its way (a job's next
	// step); the oldest go first.
	c.conns = newHTTPConns(4*cfg.MaxConcurrent, c.metrics.dials)
	c.ipmitool, c.ipmiErr = findIPMITool(cfg.IPMIToolPath)
	return c
}

// Close closes the Controller's connections to BMCs. Call it once no
// operation runs any more: one still running loses its connection and
// fails, and so does every Redfish operation after Close.
func (c *Controller) Close() {
	c.conns.close()
}

// CheckIPMITool reports whether IPMI endpoints can be served: nil, or an
// error wrapping ErrIPMIToolMissing. Call it at start-up to fail early.
func (c *Controller) CheckIPMITool() error { return c.ipmiErr }

// CheckIPMITool is the same check without a Controller.
func CheckIPMITool() error {
	_, err := findIPMITool("")
	return err
}

func findIPMITool(path string) (string, error) {
	if path == "" {
		path = "ipmitool"
	}
	p, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("%w (%v)", ErrIPMIToolMissing, err)
	}
	return p, nil
}

// --- per-BMC serialisation ---

// addrLocks holds one lock per BMC address while anyone uses or waits for
// it; entries are removed when the last user leaves, so the map does not
// grow with the number of BMCs ever seen.
type addrLocks struct {
	mu sync.Mutex
	m  map[string]*addrLock
}

type addrLock struct {
	ch   chan struct{} // capacity 1: holding the token is holding the lock
	refs int
}

func (l *addrLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	e := l.m[key]
	if e == nil {
		e = &addrLock{ch: make(chan struct{}, 1)}
		l.m[key] = e
	}
	e.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func (l *addrLocks) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// --- the operation runner ---

// session is what an operation's body works with: a bmclib client opened
// on first use, and a gofish client for what bmclib does not expose. Both
// are closed when the attempt ends.
type session struct {
	c  *Controller
	ep Endpoint
	cl *bmclib.Client
	gf *gofish.APIClient
	// gfBasic: gf logged in with basic auth (no session to close).
	gfBasic bool
	// target is the Redfish auth mode and system, once known.
	target *redfishTarget
	// transports bound every HTTP request of the attempt by its deadline.
	transports []*deadlineTransport
	// committed is set by the body once it sent a command that must not be
	// repeated (a power cycle): failures after it are not retried.
	committed bool
}

func (s *session) client(ctx context.Context) (*bmclib.Client, error) {
	if s.cl != nil {
		return s.cl, nil
	}
	cl, err := s.newClient(ctx)
	if err != nil {
		return nil, err
	}
	if s.ep.Protocol == IPMI && s.c.cfg.registry == nil {
		if err := s.c.ipmiReachable(ctx, s.ep); err != nil {
			return nil, err
		}
	}
	if err := cl.Open(ctx); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	s.cl = cl
	return cl, nil
}

func (s *session) close() {
	// The attempt's context may be spent; logging out still matters (BMCs
	// run out of sessions), so give it a short context of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	grace, _ := ctx.Deadline()
	for _, t := range s.transports {
		t.setDeadline(grace)
	}
	if s.cl != nil {
		_ = s.cl.Close(ctx)
	}
	if s.gf != nil {
		s.gf.Logout()
	}
	// The connections stay open for the next operation on this BMC
	// (httpConns). The clients' CloseIdleConnections, which gofish calls
	// in Logout, does not reach the shared transport: deadlineTransport
	// does not pass it on.
}

func (s *session) newClient(ctx context.Context) (*bmclib.Client, error) {
	c, ep := s.c, s.ep
	scheme, host, port, err := ep.hostPort()
	if err != nil {
		return nil, err
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6: bmclib appends ":port"
	}
	budget := c.cfg.OpTimeout
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	}
	// We build the registry ourselves with only the provider for the
	// endpoint's protocol: bmclib's default registers seven providers,
	// and Open logs into every one of them at once.
	var reg *registrar.Registry
	var provider string
	switch ep.Protocol {
	case Redfish:
		provider = bmcredfish.ProviderName
		if scheme == "http" {
			host = "http://" + host
		}
		if c.cfg.registry == nil {
			t, err := s.redfishTarget(ctx)
			if err != nil {
				return nil, err
			}
			if s.gf != nil {
				// Discovery's session is done with: BMCs have few
				// sessions, so it ends before bmclib opens its own.
				s.gf.Logout()
				s.gf = nil
			}
			reg = registrar.NewRegistry()
			hc := s.newHTTPClient(ctx)
			drv := bmcredfish.New(host, ep.Username, ep.Password, logr.Discard(),
				bmcredfish.WithPort(port), bmcredfish.WithHttpClient(hc),
				bmcredfish.WithUseBasicAuth(t.basicAuth), bmcredfish.WithSystemName(t.systemName))
			reg.Register(bmcredfish.ProviderName, bmcredfish.ProviderProtocol, bmcredfish.Features, nil, drv)
		}
	case IPMI:
		provider = ipmitool.ProviderName
		if c.cfg.registry == nil {
			if c.ipmiErr != nil {
				return nil, c.ipmiErr
			}
			// bmclib's ipmitool logs its command line at V(3): discard,
			// our own slog lines say what matters.
			drv, err := ipmitool.New(host, ep.Username, ep.Password, ipmitool.WithPort(port),
				ipmitool.WithIpmitoolPath(c.ipmitool), ipmitool.WithLogger(logr.Discard()))
			if err != nil {
				return nil, fmt.Errorf("%w (%v)", ErrIPMIToolMissing, err)
			}
			reg = registrar.NewRegistry()
			reg.Register(ipmitool.ProviderName, ipmitool.ProviderProtocol, ipmitool.Features, nil, drv)
		}
	default:
		return nil, fmt.Errorf("unknown BMC protocol %q (want ipmi or redfish): %w", ep.Protocol, errUnsupported)
	}
	if c.cfg.registry != nil {
		reg = c.cfg.registry(ep)
	}
	cl := bmclib.NewClient(host, ep.Username, ep.Password,
		bmclib.WithRegistry(reg),
		bmclib.WithLogger(logr.Discard()),
		// One provider: it gets the whole budget, not a share of it.
		bmclib.WithPerProviderTimeout(budget))
	// Keep only our provider even if a registry brought others (tests).
	cl.Registry.Drivers = cl.Registry.For(provider)
	if len(cl.Registry.Drivers) == 0 {
		return nil, fmt.Errorf("bmclib provider %s not available: %w", provider, errUnsupported)
	}
	return cl, nil
}

var errUnsupported = errors.New("not supported")

// newHTTPClient is a fresh client per attempt, as bmclib's own: the
// Redfish provider overwrites its Timeout at Open, so it cannot be shared,
// and its cookie jar must not carry one operation's session into the
// next. Every request it sends ends by the attempt's deadline
// (deadlineTransport). Its connections are the Controller's (httpConns):
// kept alive within the attempt and, for a while, across attempts and
// operations on the same BMC — one TCP/TLS handshake per BMC and burst of
// operations instead of one per request, which matters with thousands of
// BMCs.
func (s *session) newHTTPClient(ctx context.Context) *http.Client {
	jar, _ := cookiejar.New(nil)
	dt := &deadlineTransport{base: s.c.conns.tr}
	timeout := s.c.cfg.OpTimeout
	if dl, ok := ctx.Deadline(); ok {
		dt.setDeadline(dl)
		timeout = time.Until(dl)
	}
	s.transports = append(s.transports, dt)
	return &http.Client{Timeout: timeout, Jar: jar, Transport: dt}
}

// run runs body against ep under the Controller's limits: the per-BMC
// lock, the global semaphore, a deadline of budget per attempt, and retries
// of transient failures. Every error it returns is a *Error.
func (c *Controller) run(ctx context.Context, ep Endpoint, op string, budget time.Duration, body func(context.Context, *session) error) error {
	return c.runRetries(ctx, ep, op, budget, c.cfg.Retries, body)
}

func (c *Controller) runRetries(ctx context.Context, ep Endpoint, op string, budget time.Duration, retries int, body func(context.Context, *session) error) (err error) {
	defer func() { c.metrics.observe(op, ep.Protocol, err) }()
	mkErr := func(kind ErrorKind, err error) *Error {
		return &Error{Kind: kind, Address: ep.Address, Protocol: ep.Protocol, Op: op, Err: err}
	}
	if ep.Protocol != IPMI && ep.Protocol != Redfish {
		return mkErr(KindUnsupported, fmt.Errorf("unknown BMC protocol %q (want ipmi or redfish)", ep.Protocol))
	}
	if _, _, _, err := ep.hostPort(); err != nil {
		return mkErr(KindProtocol, err)
	}
	if ep.Protocol == IPMI && c.ipmiErr != nil && c.cfg.registry == nil {
		return mkErr(KindUnsupported, c.ipmiErr)
	}

	// Per-BMC lock first, then a global slot: a queue of operations on one
	// slow BMC must not hold global slots other BMCs could use.
	unlock, err := c.locks.lock(ctx, ep.lockKey())
	if err != nil {
		return mkErr(KindTimeout, fmt.Errorf("waiting for the previous operation on this BMC: %w", err))
	}
	defer unlock()

	backoff := c.cfg.Backoff
	for attempt := 0; ; attempt++ {
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return mkErr(KindTimeout, fmt.Errorf("waiting for a free BMC slot: %w", ctx.Err()))
		}
		start := time.Now()
		committed, err := c.attempt(ctx, ep, budget, body)
		<-c.sem
		if err == nil {
			c.log.Debug("bmc operation done", "op", op, "bmc", ep, "attempt", attempt+1, "took", time.Since(start))
			return nil
		}
		e := err.(*Error)
		e.Op = op
		retry := transient(e) && attempt < retries && !committed && ctx.Err() == nil
		c.log.Warn("bmc operation failed", "op", op, "bmc", ep, "attempt", attempt+1, "kind", e.Kind.String(), "retry", retry, "err", oneLine(e.Err.Error()))
		if !retry {
			return e
		}
		d := backoff/2 + rand.N(backoff/2+1) // jitter: a hall of BMCs must not retry in lockstep
		backoff *= 2
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return e
		}
	}
}

// attempt runs body once, with its own deadline.
func (c *Controller) attempt(ctx context.Context, ep Endpoint, budget time.Duration, body func(context.Context, *session) error) (committed bool, err error) {
	actx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	s := &session{c: c, ep: ep}
	err = body(actx, s)
	s.close()
	if err == nil {
		return false, nil
	}
	// The BMC's lock is still held: no other operation uses these.
	c.conns.closeBMC(ep.lockKey())
	// Discover again next time: the failure may be a stale choice (a
	// renamed system, a BMC that stopped offering sessions).
	c.targets.drop(ep)
	var be *Error
	if errors.As(err, &be) {
		return s.committed, be
	}
	e := classify(ep, "", err, actx.Err())
	if ep.Protocol == IPMI && e.Kind != KindTimeout && e.Kind != KindAuth && c.ipmiErr == nil && c.cfg.registry == nil &&
		strings.Contains(strings.ToLower(err.Error()), "unable to establish ipmi v2") {
		// ipmitool says the same for a wrong password and for a dead BMC
		// unless asked to be verbose: ask it once, briefly.
		e.Kind = c.probeIPMI(ctx, ep, e.Kind)
	}
	return s.committed, e
}

// --- operations ---

// PowerState reads the chassis power.
func (c *Controller) PowerState(ctx context.Context, ep Endpoint) (PowerState, error) {
	st := PowerUnknown
	err := c.run(ctx, ep, "power-state", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		var err error
		st, err = s.powerState(ctx)
		return err
	})
	return st, err
}

func (s *session) powerState(ctx context.Context) (PowerState, error) {
	cl, err := s.client(ctx)
	if err != nil {
		return PowerUnknown, err
	}
	raw, err := cl.GetPowerState(ctx)
	if err != nil {
		return PowerUnknown, fmt.Errorf("read power state: %w", err)
	}
	return normalisePower(raw), nil
}

// SetPower sends a power action and waits until the machine reaches the
// state the action ends in (on for on, cycle and reset; off for off and
// soft), polling every PollInterval for at most PowerTimeout. A cycle of a
// machine that is off powers it on. A machine that does not get there in
// time is an error of kind Timeout.
//
// For cycle and reset, "on" is awaited after the BMC accepted the command;
// reading "on" at the first poll counts as done, because many BMCs restart
// the host so fast that the chassis never reads "off". A cycle or reset
// that was sent is never retried.
func (c *Controller) SetPower(ctx context.Context, ep Endpoint, action PowerAction) error {
	want, ok := action.target()
	if !ok {
		return &Error{Kind: KindUnsupported, Address: ep.Address, Protocol: ep.Protocol, Op: "set-power",
			Err: fmt.Errorf("unknown power action %q (want on, off, soft, cycle or reset)", action)}
	}
	return c.run(ctx, ep, "set-power "+string(action), c.cfg.OpTimeout+c.cfg.PowerTimeout, func(ctx context.Context, s *session) error {
		cur, err := s.powerState(ctx)
		if err != nil {
			return err
		}
		cmd := string(action)
		if cur == PowerOff && (action == ActionCycle || action == ActionReset) {
			// Redfish refuses ForceRestart and IPMI ignores a cycle
			// when the machine is off.
			cmd = string(ActionOn)
		}
		if cur == want && (action == ActionOn || action == ActionOff || action == ActionSoft) {
			return nil
		}
		// A cycle or reset happens once: never retried after it is sent.
		s.committed = action == ActionCycle || action == ActionReset
		cl, err := s.client(ctx)
		if err != nil {
			return err
		}
		if _, err := cl.SetPowerState(ctx, cmd); err != nil {
			// bmclib's Redfish graceful shutdown reports "not ok" after
			// the BMC accepted it; polling tells whether it worked.
			if !(action == ActionSoft && strings.Contains(err.Error(), "failed to set power state") &&
				!strings.Contains(err.Error(), "provider: "+bmcredfish.ProviderName+":")) {
				return fmt.Errorf("power %s: %w", cmd, err)
			}
		}
		s.committed = true
		return s.waitPower(ctx, want)
	})
}

// waitPower polls until the power state is want. Transient read errors
// while the BMC is busy switching are tolerated until the deadline.
func (s *session) waitPower(ctx context.Context, want PowerState) error {
	pctx, cancel := context.WithTimeout(ctx, s.c.cfg.PowerTimeout)
	defer cancel()
	tick := time.NewTicker(s.c.cfg.PollInterval)
	defer tick.Stop()
	last, lastErr := PowerUnknown, error(nil)
	for {
		st, err := s.powerState(pctx)
		if err == nil && st == want {
			return nil
		}
		if err != nil {
			e := classify(s.ep, "", err, pctx.Err())
			if e.Kind == KindAuth || e.Kind == KindUnsupported {
				return err
			}
			if pctx.Err() == nil { // not just our own deadline cutting the read short
				lastErr = err
			}
		} else {
			last = st
		}
		select {
		case <-tick.C:
		case <-pctx.Done():
			msg := fmt.Errorf("power did not reach %s within %s (last seen: %s)", want, s.c.cfg.PowerTimeout, last)
			if lastErr != nil {
				msg = fmt.Errorf("%w; last read error: %v", msg, lastErr)
			}
			return &Error{Kind: KindTimeout, Address: s.ep.Address, Protocol: s.ep.Protocol, Err: fmt.Errorf("%w: %w", msg, context.DeadlineExceeded)}
		}
	}
}

// SetBootDevice sets the boot override and reads it back where the BMC
// can tell: a BMC that accepted the override and then reports another
// device is an error of kind Protocol.
func (c *Controller) SetBootDevice(ctx context.Context, ep Endpoint, opt BootOptions) error {
	if !opt.Device.valid() {
		return &Error{Kind: KindUnsupported, Address: ep.Address, Protocol: ep.Protocol, Op: "set-boot",
			Err: fmt.Errorf("unknown boot device %q (want pxe, disk, bios or cdrom)", opt.Device)}
	}
	return c.run(ctx, ep, "set-boot "+string(opt.Device), c.cfg.OpTimeout+c.cfg.BootVerifyDelay, func(ctx context.Context, s *session) error {
		cl, err := s.client(ctx)
		if err != nil {
			return err
		}
		if _, err := cl.SetBootDevice(ctx, string(opt.Device), opt.Persistent, opt.UEFI); err != nil {
			return fmt.Errorf("set boot device %s: %w", opt.Device, err)
		}
		if d := s.c.cfg.BootVerifyDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		got, err := s.bootOverride(ctx)
		if err != nil {
			var e *Error
			if errors.As(err, &e) && e.Kind == KindUnsupported || errors.Is(err, errUnsupported) {
				s.c.log.Debug("boot override not readable; not verified", "bmc", s.ep, "err", err)
				return nil
			}
			return fmt.Errorf("read back boot override: %w", err)
		}
		if err := s.verifyBoot(opt, got); err != nil {
			return &Error{Kind: KindProtocol, Address: s.ep.Address, Protocol: s.ep.Protocol, Err: err}
		}
		return nil
	})
}

// verifyBoot compares the override read back with the one asked for: the
// device, once vs every boot, and the mode (where the BMC reports one).
// BMCs accept overrides and then keep another (sushy-tools stays
// "Continuous" when asked for "Once").
func (s *session) verifyBoot(want BootOptions, got BootOverride) error {
	if got.Device != want.Device {
		return fmt.Errorf("BMC accepted boot device %s but then reported %q: it reverted the override", want.Device, got.Raw)
	}
	if s.ep.Protocol == IPMI {
		// ipmi_sim reads a persistent override back as "next boot
		// only" (TestIPMIBoot): on IPMI only the device is checked.
		return nil
	}
	if got.Persistent != want.Persistent {
		return fmt.Errorf("BMC accepted boot device %s %s but reports it %s", want.Device, persistence(want.Persistent), persistence(got.Persistent))
	}
	modeKnown := s.target == nil || s.target.reportsMode
	if modeKnown && got.UEFI != want.UEFI {
		return fmt.Errorf("BMC accepted boot device %s in %s mode but reports %s mode", want.Device, bootMode(want.UEFI), bootMode(got.UEFI))
	}
	return nil
}

func persistence(p bool) string {
	if p {
		return "for every boot"
	}
	return "for the next boot only"
}

func bootMode(uefi bool) string {
	if uefi {
		return "UEFI"
	}
	return "legacy (BIOS)"
}

// BootOverride reads the boot override: on Redfish through bmclib, on IPMI
// with `ipmitool chassis bootparam get 5`.
func (c *Controller) BootOverride(ctx context.Context, ep Endpoint) (BootOverride, error) {
	var bo BootOverride
	err := c.run(ctx, ep, "boot-override", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		var err error
		bo, err = s.bootOverride(ctx)
		return err
	})
	return bo, err
}

func (s *session) bootOverride(ctx context.Context) (BootOverride, error) {
	if s.ep.Protocol == IPMI && s.c.cfg.registry == nil {
		return s.c.ipmiBootOverride(ctx, s.ep)
	}
	cl, err := s.client(ctx)
	if err != nil {
		return BootOverride{}, err
	}
	o, err := cl.GetBootDeviceOverride(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "not a BootDeviceOverrideGetter") {
			return BootOverride{}, fmt.Errorf("boot override: %w", errUnsupported)
		}
		return BootOverride{}, fmt.Errorf("read boot override: %w", err)
	}
	return BootOverride{Device: BootDevice(o.Device), Persistent: o.IsPersistent, UEFI: o.IsEFIBoot, Raw: string(o.Device)}, nil
}

// Inventory reads what the BMC knows about its machine. Redfish gives
// identity, BMC firmware, GPUs, NICs and drives; IPMI the BMC firmware and
// manufacturer from `mc info`.
func (c *Controller) Inventory(ctx context.Context, ep Endpoint) (Inventory, error) {
	var inv Inventory
	err := c.run(ctx, ep, "inventory", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		var err error
		if ep.Protocol == IPMI {
			inv, err = c.ipmiInventory(ctx, ep)
			return err
		}
		inv, err = s.redfishInventory(ctx)
		return err
	})
	return inv, err
}

func (s *session) redfishInventory(ctx context.Context) (Inventory, error) {
	var inv Inventory
	gf, sys, err := s.gofishSystem(ctx)
	if err != nil {
		return inv, err
	}
	inv.Vendor, inv.Model, inv.Serial, inv.BIOSVersion = sys.Manufacturer, sys.Model, sys.SerialNumber, sys.BIOSVersion
	if ms, err := gf.Service.Managers(); err == nil && len(ms) > 0 {
		inv.BMCFirmware = ms[0].FirmwareVersion
	}
	// The rest is optional in the schema: a BMC that lacks it simply
	// reports nothing.
	if procs, err := sys.Processors(); err == nil {
		for _, p := range procs {
			if strings.EqualFold(string(p.ProcessorType), "GPU") {
				inv.GPUs = append(inv.GPUs, GPU{ID: p.ID, Vendor: p.Manufacturer, Model: p.Model, Serial: p.SerialNumber})
			}
		}
	}
	if eths, err := sys.EthernetInterfaces(); err == nil {
		for _, e := range eths {
			inv.NICs = append(inv.NICs, NIC{ID: e.ID, MAC: strings.ToLower(e.MACAddress), SpeedMbps: e.SpeedMbps})
		}
	}
	if stores, err := sys.Storage(); err == nil {
		for _, st := range stores {
			drives, err := st.Drives()
			if err != nil {
				continue
			}
			for _, d := range drives {
				inv.Disks = append(inv.Disks, Disk{ID: d.ID, Model: d.Model, Serial: d.SerialNumber, CapacityBytes: d.CapacityBytes})
			}
		}
	}
	// gofish fetches collection members concurrently: order them.
	slices.SortFunc(inv.GPUs, func(a, b GPU) int { return cmpID(a.ID, b.ID) })
	slices.SortFunc(inv.NICs, func(a, b NIC) int { return cmpID(a.ID, b.ID) })
	slices.SortFunc(inv.Disks, func(a, b Disk) int { return cmpID(a.ID, b.ID) })
	return inv, nil
}

// cmpID orders IDs naturally: "GPU2" before "GPU10".
func cmpID(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// EventLog reads the system event log, each entry with its severity
// (Event.Critical: what commissioning fails a machine for).
func (c *Controller) EventLog(ctx context.Context, ep Endpoint) ([]Event, error) {
	var out []Event
	err := c.run(ctx, ep, "event-log", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		var err error
		out, err = s.eventLog(ctx)
		return err
	})
	return out, err
}
