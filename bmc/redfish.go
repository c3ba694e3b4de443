package bmc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stmcginnis/gofish"
	gofishcommon "github.com/stmcginnis/gofish/common"
	"github.com/stmcginnis/gofish/redfish"
)

// AuthMode is how the service authenticates to a Redfish BMC.
type AuthMode string

// Auth modes.
const (
	// AuthAuto uses a Redfish session when the service root links one
	// (Links.Sessions), and HTTP basic auth when it does not.
	AuthAuto AuthMode = ""
	// AuthSession always logs in with a session (X-Auth-Token).
	AuthSession AuthMode = "session"
	// AuthBasic always sends HTTP basic auth and never makes a session.
	AuthBasic AuthMode = "basic"
)

// Valid says whether m is a known auth mode.
func (m AuthMode) Valid() bool {
	return m == AuthAuto || m == AuthSession || m == AuthBasic
}

// --- per-try deadline on every request ---

// deadlineTransport bounds every request of one attempt by the attempt's
// deadline. bmclib and gofish send most requests without a context, and
// bmclib sets the http.Client's Timeout per request at Open: without this
// a BMC answering each request slowly overran the attempt by a multiple of
// its budget, holding the BMC's lock all along.
type deadlineTransport struct {
	base     http.RoundTripper
	deadline atomic.Int64 // unix nanoseconds; 0: none
}

func (t *deadlineTransport) setDeadline(d time.Time) { t.deadline.Store(d.UnixNano()) }

func (t *deadlineTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	dl := t.deadline.Load()
	if dl == 0 {
		return t.base.RoundTrip(keepAlive(req))
	}
	ctx, cancel := context.WithDeadline(req.Context(), time.Unix(0, dl))
	resp, err := t.base.RoundTrip(keepAlive(req.WithContext(ctx)))
	if err != nil {
		expired := errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
		if expired {
			return nil, fmt.Errorf("%s %s: the attempt's deadline passed: %w", req.Method, req.URL.Path, context.DeadlineExceeded)
		}
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// keepAlive undoes gofish's Connection: close. gofish asks for a new
// connection per request (req.Close) whenever it is handed an
// http.Client, as bmclib does, which made every request of an operation
// a TCP (and TLS) handshake of its own and defeated the shared transport.
// req is not modified: a shallow copy is.
func keepAlive(req *http.Request) *http.Request {
	if !req.Close {
		return req
	}
	r := *req
	r.Close = false
	return &r
}

// deadlineTransport deliberately has no CloseIdleConnections: the
// connections belong to the Controller (httpConns), not to the attempt,
// and gofish's Logout, which calls it on its client, must not close every
// BMC's connections.

// cancelBody releases the request's deadline context once the body is
// closed. It first reads what is left of a short body: gofish closes some
// answers unread (a session login's, whose token is in a header), and
// the Transport closes a connection whose answer was not read to its end
// rather than reuse it.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

// drainLimit bounds what Close reads of an unread answer; a longer one
// costs its connection instead.
const drainLimit = 64 << 10

func (b *cancelBody) Close() error {
	_, _ = io.Copy(io.Discard, io.LimitReader(b.ReadCloser, drainLimit))
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// --- which system, which auth ---

// redfishTarget is what discovery learned about a Redfish BMC: how to log
// in and which ComputerSystem to drive.
type redfishTarget struct {
	basicAuth bool
	// systemName is the ComputerSystem's Name, which bmclib matches on.
	systemName string
	systemID   string
	// reportsMode: the system reports BootSourceOverrideMode, so the mode
	// of an override can be verified.
	reportsMode bool
}

// redfishTargets caches discovery per BMC: one extra login per BMC and
// Controller, not per operation. An entry is dropped when an operation on
// its BMC fails, so a BMC whose firmware changed is discovered again.
type redfishTargets struct {
	mu sync.Mutex
	m  map[string]redfishTarget
}

func (e Endpoint) targetKey() string {
	return e.lockKey() + "|" + e.Username + "|" + string(e.Auth) + "|" + e.System
}

func (r *redfishTargets) get(ep Endpoint) (redfishTarget, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.m[ep.targetKey()]
	return t, ok
}

func (r *redfishTargets) put(ep Endpoint, t redfishTarget) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]redfishTarget)
	}
	r.m[ep.targetKey()] = t
}

func (r *redfishTargets) drop(ep Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, ep.targetKey())
}

// baseURL is scheme://host:port of a Redfish endpoint.
func (e Endpoint) baseURL() (string, error) {
	scheme, host, port, err := e.hostPort()
	if err != nil {
		return "", err
	}
	if scheme == "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// offersSessions reads the service root, which the Redfish specification
// makes readable without credentials, and says whether it links a
// session collection. Without one a session cannot be made: gofish would
// post the login to an empty path and never send the credentials.
func (s *session) offersSessions(ctx context.Context, hc *http.Client, base string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/redfish/v1/", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("read service root: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, fmt.Errorf("read service root: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// gofish's own error type, so that the status is classified (and
		// a 5xx retried) as any other Redfish answer.
		return false, fmt.Errorf("read service root: %w", gofishcommon.ConstructError(resp.StatusCode, body))
	}
	var root struct {
		Links struct {
			Sessions struct {
				ID string `json:"@odata.id"`
			}
		}
	}
	if err := json.Unmarshal(body, &root); err != nil {
		return false, fmt.Errorf("read service root: not Redfish JSON: %w", err)
	}
	return root.Links.Sessions.ID != "", nil
}

// redfishTarget returns the auth mode and system for the session's BMC,
// discovering them (and caching them on the Controller) on first use.
func (s *session) redfishTarget(ctx context.Context) (redfishTarget, error) {
	if s.target != nil {
		return *s.target, nil
	}
	if t, ok := s.c.targets.get(s.ep); ok {
		s.target = &t
		return t, nil
	}
	gf, basic, err := s.openGofish(ctx)
	if err != nil {
		return redfishTarget{}, err
	}
	systems, err := gf.Service.Systems()
	if err != nil {
		return redfishTarget{}, fmt.Errorf("list systems: %w", err)
	}
	sys, err := chooseSystem(systems, s.ep.System)
	if err != nil {
		return redfishTarget{}, err
	}
	t := redfishTarget{basicAuth: basic, systemName: sys.Name, systemID: sys.ID,
		reportsMode: sys.Boot.BootSourceOverrideMode != ""}
	s.c.targets.put(s.ep, t)
	s.target = &t
	return t, nil
}

// chooseSystem picks the ComputerSystem to drive. GPU servers list several
// (the host and its GPU baseboard, e.g. System_0 and HGX_Baseboard_0):
// the one to drive is the one that can be reset and has a boot override.
// want, when set, names it by Id or Name.
func chooseSystem(systems []*redfish.ComputerSystem, want string) (*redfish.ComputerSystem, error) {
	systems = slices.DeleteFunc(slices.Clone(systems), func(s *redfish.ComputerSystem) bool { return s == nil })
	slices.SortFunc(systems, func(a, b *redfish.ComputerSystem) int { return cmpID(a.ID, b.ID) })
	var names []string
	for _, sys := range systems {
		names = append(names, sys.ID)
	}
	if want != "" {
		for _, sys := range systems {
			if sys.ID == want || sys.Name == want {
				return sys, nil
			}
		}
		return nil, fmt.Errorf("BMC lists no system %q (it lists: %s): %w", want, listOrNone(names), errUnsupported)
	}
	if len(systems) == 0 {
		return nil, fmt.Errorf("BMC lists no ComputerSystem: %w", errUnsupported)
	}
	if len(systems) == 1 {
		return systems[0], nil
	}
	var drivable []*redfish.ComputerSystem
	for _, sys := range systems {
		if canDrive(sys) {
			drivable = append(drivable, sys)
		}
	}
	if len(drivable) == 1 {
		return drivable[0], nil
	}
	return nil, fmt.Errorf("BMC lists %d systems (%s) and %d of them can be both reset and boot-overridden: name the one to drive: %w",
		len(systems), listOrNone(names), len(drivable), errUnsupported)
}

// canDrive says whether a system has the ComputerSystem.Reset action and a
// Boot object with an override target, from its own JSON: gofish keeps the
// reset target unexported.
func canDrive(sys *redfish.ComputerSystem) bool {
	var raw struct {
		Actions map[string]json.RawMessage
		Boot    *struct {
			BootSourceOverrideTarget string
			Allowable                []string `json:"BootSourceOverrideTarget@Redfish.AllowableValues"`
		}
	}
	if err := json.Unmarshal(sys.RawData, &raw); err != nil {
		return false
	}
	_, reset := raw.Actions["#ComputerSystem.Reset"]
	boot := raw.Boot != nil && (raw.Boot.BootSourceOverrideTarget != "" || len(raw.Boot.Allowable) > 0)
	return reset && boot
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// openGofish logs in with gofish, by session or basic auth as the
// endpoint and the BMC's service root call for.
func (s *session) openGofish(ctx context.Context) (*gofish.APIClient, bool, error) {
	if s.gf != nil {
		return s.gf, s.gfBasic, nil
	}
	base, err := s.ep.baseURL()
	if err != nil {
		return nil, false, err
	}
	hc := s.newHTTPClient(ctx)
	basic := s.ep.Auth == AuthBasic
	if !basic {
		// On any error below, the failed attempt closes this BMC's
		// connections (Controller.attempt).
		ok, err := s.offersSessions(ctx, hc, base)
		if err != nil {
			return nil, false, err
		}
		if !ok {
			if s.ep.Auth == AuthSession {
				return nil, false, fmt.Errorf("session login asked for, but the BMC's service root links no Sessions collection; use basic auth for this BMC: %w", errUnsupported)
			}
			basic = true
		}
	}
	gf, err := gofish.ConnectContext(ctx, gofish.ClientConfig{
		Endpoint: base, Username: s.ep.Username, Password: s.ep.Password,
		Insecure: true, HTTPClient: hc, BasicAuth: basic,
	})
	if err != nil {
		return nil, false, fmt.Errorf("login: %w", err)
	}
	s.gf, s.gfBasic = gf, basic
	return gf, basic, nil
}

// gofishSystem is the system discovery chose, read through gofish.
func (s *session) gofishSystem(ctx context.Context) (*gofish.APIClient, *redfish.ComputerSystem, error) {
	t, err := s.redfishTarget(ctx)
	if err != nil {
		return nil, nil, err
	}
	gf, _, err := s.openGofish(ctx)
	if err != nil {
		return nil, nil, err
	}
	systems, err := gf.Service.Systems()
	if err != nil {
		return nil, nil, fmt.Errorf("list systems: %w", err)
	}
	for _, sys := range systems {
		if sys != nil && sys.ID == t.systemID {
			return gf, sys, nil
		}
	}
	s.c.targets.drop(s.ep)
	return nil, nil, errors.New("the BMC no longer lists system " + t.systemID)
}
