package bmc

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// idleConnTimeout is how long a connection to a BMC stays open unused
// between two operations (or two requests of one).
//
// It must be shorter than the BMC's own keep-alive timeout. Many BMC web
// servers close an idle connection after about 5 s (lighttpd's and
// Apache's defaults, which embedded BMC stacks inherit). A request written
// onto a connection the BMC has just closed fails; Go's http.Transport
// sends it again on a new connection only when that is safe: when nothing
// was written (nothingWrittenError; our bodies can be rewound), or when
// the request is replayable (GET, HEAD) and the server hung up before
// answering (errServerClosedIdle). A POST that was written is never sent
// again: a power action that meets a closing connection fails, and the
// operation reports the failure (a cycle is marked committed before it is
// sent, so the runner does not repeat it either) — a spurious failure,
// never a second power cycle. And a POST is never the first request on
// a connection an operation picks from the pool: every operation starts
// by logging in, which reads the service root (a GET) first, so a
// connection the BMC closed meanwhile is found out by a request the
// Transport may send again. Closing our side first keeps even that from
// happening: the Transport hands out no connection idle for longer
// than this (it checks the idle time when it picks one, not only when
// its timer fires), and 3 s leaves 2 s for the answer's way back and our
// own scheduling before a 5 s BMC gives up on it.
//
// It is longer than the 2 s between the power reads of a wait for power
// (Config.PollInterval) and than the gaps between the back-to-back
// operations of a job's BMC steps (boot device, power cycle; the storm
// measured them: bench/storm/README.md, Round 8), so those reuse one
// connection. Between a power cycle and the next operation a real
// machine boots for minutes: no connection is kept that long.
const idleConnTimeout = 3 * time.Second

// httpConns is the Controller's one HTTP transport to its Redfish BMCs,
// shared by every attempt's http.Client: a connection (and its TLS
// handshake) outlives the operation that opened it and serves the next
// operation on the same BMC if that comes within idleConnTimeout. Only
// the connection is shared: each attempt has its own client, cookie jar
// and deadline, and logs in and out as before.
//
// It tracks every connection it dials by BMC (host:port, as lockKey), so
// that the connections of one BMC can be closed when an operation on it
// fails, and all of them when the Controller closes.
type httpConns struct {
	tr *http.Transport

	dials  prometheus.Counter
	dialer net.Dialer

	mu     sync.Mutex
	open   map[string]map[*trackedConn]struct{}
	closed bool
}

// errClosed is what an operation after Controller.Close gets.
var errClosed = errors.New("the BMC controller is closed")

func newHTTPConns(maxIdle int, dials prometheus.Counter) *httpConns {
	p := &httpConns{
		dials:  dials,
		dialer: net.Dialer{Timeout: 30 * time.Second},
		open:   make(map[string]map[*trackedConn]struct{}),
	}
	p.tr = &http.Transport{
		DialContext:           p.dial,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // BMCs ship self-signed certificates
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		// Each BMC runs one operation at a time (addrLocks), so one idle
		// connection per BMC is all that can be reused.
		MaxIdleConnsPerHost: 1,
		MaxIdleConns:        maxIdle,
		IdleConnTimeout:     idleConnTimeout,
	}
	return p
}

// connKey is the key of a BMC's connections: host:port, lower case, the
// same as Endpoint.lockKey gives for the endpoint the address came from.
func connKey(addr string) string { return strings.ToLower(addr) }

func (p *httpConns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p.dials.Inc()
	tc := &trackedConn{Conn: c, p: p, key: connKey(addr)}
	p.mu.Lock()
	if p.closed {
		// A dial that was under way when the Controller closed: the
		// connection would outlive it.
		p.mu.Unlock()
		_ = c.Close()
		return nil, errClosed
	}
	set := p.open[tc.key]
	if set == nil {
		set = make(map[*trackedConn]struct{})
		p.open[tc.key] = set
	}
	set[tc] = struct{}{}
	p.mu.Unlock()
	return tc, nil
}

func (p *httpConns) forget(tc *trackedConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := p.open[tc.key]
	delete(set, tc)
	if len(set) == 0 {
		delete(p.open, tc.key)
	}
}

// closeBMC closes every connection to one BMC (key: Endpoint.lockKey).
// Called after an operation on the BMC failed, while its lock is still
// held, so none of them is in use by another operation: a connection that
// carried a failed exchange (a BMC web server restarting, a request cut
// off by its deadline, garbage in an answer) is not worth trusting with
// the next power command.
func (p *httpConns) closeBMC(key string) {
	for _, tc := range p.of(key) {
		_ = tc.Close() // the Transport's reader sees the close and drops it
	}
}

// of lists the connections open to one BMC.
func (p *httpConns) of(key string) []*trackedConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*trackedConn, 0, len(p.open[key]))
	for tc := range p.open[key] {
		out = append(out, tc)
	}
	return out
}

// close closes the idle connections and every other one still open, and
// refuses to open more.
func (p *httpConns) close() {
	p.tr.CloseIdleConnections()
	p.mu.Lock()
	p.closed = true
	var conns []*trackedConn
	for _, set := range p.open {
		for tc := range set {
			conns = append(conns, tc)
		}
	}
	p.mu.Unlock()
	for _, tc := range conns {
		_ = tc.Close()
	}
}

// size is the number of connections open.
func (p *httpConns) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, set := range p.open {
		n += len(set)
	}
	return n
}

// trackedConn removes itself from the pool's books when closed, by the
// Transport (idle timeout, a broken exchange, Connection: close) or by us.
type trackedConn struct {
	net.Conn
	p    *httpConns
	key  string
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.p.forget(c) })
	return err
}
