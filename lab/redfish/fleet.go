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
	"syscall"
	"time"
)

// Fleet is many emulated BMCs served by one process, each on its own
// loopback port, as a rack or a hall of machines would be.
type Fleet struct {
	BMCs []*FleetBMC

	servers []*http.Server
	wg      sync.WaitGroup
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
			Handler:           s,
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
			_ = hs.Serve(ln)
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
