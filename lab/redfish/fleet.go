package redfish

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Fleet is many emulated BMCs served by one process, each on its own
// loopback port, as a rack or a hall of machines would be.
type Fleet struct {
	BMCs []*FleetBMC

	servers []*http.Server
	wg      sync.WaitGroup

	conns, requests atomic.Int64
	gaps            [len(GapBounds) + 1]atomic.Int64
}

// GapBounds are the upper bounds of FleetStats.Gaps' buckets.
var GapBounds = [...]time.Duration{10 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 3 * time.Second, 5 * time.Second, 10 * time.Second}

// FleetStats is what the fleet's BMCs saw, summed over them: how a client
// uses its connections to them.
type FleetStats struct {
	// Connections is the TCP connections the BMCs accepted.
	Connections int64
	// Requests is the requests they were sent.
	Requests int64
	// Gaps counts the idle gaps on one BMC, from the end of an answer to
	// the next request to the same BMC, by length: Gaps[i] those up to
	// GapBounds[i], the last those longer than every bound. A client
	// keeping its connection to a BMC open for d reuses it across the
	// gaps shorter than d.
	Gaps [len(GapBounds) + 1]int64
}

// Sub is what happened between an earlier snapshot o and s.
func (s FleetStats) Sub(o FleetStats) FleetStats {
	d := FleetStats{Connections: s.Connections - o.Connections, Requests: s.Requests - o.Requests}
	for i := range s.Gaps {
		d.Gaps[i] = s.Gaps[i] - o.Gaps[i]
	}
	return d
}

// Stats returns the fleet's counters so far.
func (f *Fleet) Stats() FleetStats {
	st := FleetStats{Connections: f.conns.Load(), Requests: f.requests.Load()}
	for i := range f.gaps {
		st.Gaps[i] = f.gaps[i].Load()
	}
	return st
}

// countingListener counts the connections a fleet's BMC accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// gapCounter measures the idle gaps between one BMC's requests. A client
// sends one BMC one request at a time (metalhall's controller does), so
// the gap before a request is from the end of the previous answer.
type gapCounter struct {
	h       http.Handler
	f       *Fleet
	lastEnd atomic.Int64 // unix nanoseconds; 0: no request yet
}

func (g *gapCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	g.f.requests.Add(1)
	if last := g.lastEnd.Load(); last != 0 {
		gap := start.Sub(time.Unix(0, last))
		i := 0
		for i < len(GapBounds) && gap > GapBounds[i] {
			i++
		}
		g.f.gaps[i].Add(1)
	}
	g.h.ServeHTTP(w, r)
	g.lastEnd.Store(time.Now().UnixNano())
}

// FleetBMC is one member of a Fleet.
type FleetBMC struct {
	*Server
	// Addr is host:port of this BMC's plain-HTTP Redfish service.
	Addr string
}

// StartFleet starts n emulated BMCs on host (e.g. "127.0.0.1"), on ports
// basePort, basePort+1, ... or on ephemeral ports when basePort is 0. mk
// returns the Config of BMC i; nil gives every BMC admin/admin and the
// defaults.
//
// The fleet runs until Close. On error, the BMCs already started are
// closed.
func StartFleet(host string, n, basePort int, mk func(i int) Config) (*Fleet, error) {
	f := &Fleet{}
	if mk == nil {
		mk = func(int) Config { return Config{Username: "admin", Password: "admin"} }
	}
	for i := 0; i < n; i++ {
		port := 0
		if basePort > 0 {
			port = basePort + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("redfish fleet: BMC %d of %d: %w", i+1, n, err)
		}
		s := NewServer(mk(i))
		hs := &http.Server{
			Handler:           &gapCounter{h: s, f: f},
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       30 * time.Second,
			// Quiet: a client that hangs up mid-request is normal here.
			ErrorLog: log.New(io.Discard, "", 0),
		}
		f.servers = append(f.servers, hs)
		f.BMCs = append(f.BMCs, &FleetBMC{Server: s, Addr: ln.Addr().String()})
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			_ = hs.Serve(countingListener{Listener: ln, n: &f.conns})
		}()
	}
	return f, nil
}

// Close stops every BMC of the fleet and waits for their servers to return.
func (f *Fleet) Close() {
	for _, s := range f.servers {
		_ = s.Close()
	}
	f.wg.Wait()
}

// Run is the entry point of `metalhall-lab bmc` (cmd/metalhall-lab):
// it serves a fleet of emulated Redfish BMCs until ctx is done or SIGINT /
// SIGTERM arrives, and prints one line per BMC to out.
//
//	-n 10 -base-port 8000 -host 127.0.0.1 -user admin -password admin -latency 0s -gpus 8
func Run(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("lab bmc", flag.ContinueOnError)
	fs.SetOutput(out)
	n := fs.Int("n", 10, "number of emulated BMCs")
	host := fs.String("host", "127.0.0.1", "address to listen on")
	base := fs.Int("base-port", 8000, "port of the first BMC; the others follow (0: ephemeral ports)")
	user := fs.String("user", "admin", "BMC username")
	pass := fs.String("password", "admin", "BMC password")
	latency := fs.Duration("latency", 0, "added latency per request")
	gpus := fs.Int("gpus", 8, "GPUs reported per system")
	on := fs.Bool("power-on", false, "start with every system powered on")
	noSess := fs.Bool("no-sessions", false, "no SessionService: HTTP basic auth only (as sushy-tools)")
	baseboard := fs.Bool("baseboard", false, "list a host System_0 and a GPU baseboard HGX_Baseboard_0 (as GB300 BMCs)")
	onceCont := fs.Bool("once-as-continuous", false, "keep every boot override Continuous, even when asked for Once (as sushy-tools)")
	limit := fs.String("power-limit", "", `where the chassis offers a power cap: "" PowerControl, "controls" a Control resource, "none" no cap`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *limit != "" && *limit != "controls" && *limit != "none" {
		return fmt.Errorf("lab bmc: -power-limit %q: want empty, controls or none", *limit)
	}
	if *n < 1 {
		return errors.New("lab bmc: -n must be at least 1")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := StartFleet(*host, *n, *base, func(i int) Config {
		return Config{
			Username: *user, Password: *pass, Latency: *latency, GPUs: *gpus, PowerOn: *on,
			NoSessions: *noSess, Baseboard: *baseboard, OnceAsContinuous: *onceCont, PowerLimit: *limit,
			Serial: fmt.Sprintf("EMU%05d", i+1),
			MACs:   []string{fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))},
		}
	})
	if err != nil {
		return err
	}
	defer f.Close()
	for i, b := range f.BMCs {
		fmt.Fprintf(out, "bmc-%05d redfish http://%s user=%s\n", i+1, b.Addr, *user)
	}
	log.Info("redfish BMC emulators running", "count", *n, "first", f.BMCs[0].Addr)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
