package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/lab/netns"
)

// The DHCP probe measures the service's DHCP answers during the storm
// from a process of its own. The simulated machines hash every image byte
// on the same two cores as the service; in a hall each machine has its own
// CPUs. So the bench runs its machines at a lower CPU priority (run.sh:
// nice 10) and starts the service and this probe at the default one: what
// the probe sees is the service's latency, not the wait of a simulated
// machine for a CPU to read its reply. The machines' own DHCP samples are
// still reported, as "dhcp-xchg".

// probeMAC is the probe machine's: enrolled, never booted, reserved
// probeAddr, in a rack of its own that is never commissioned.
var (
	probeMAC  = net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0xff, 0xfe}
	probeAddr = netip.MustParseAddr("10.77.0.250")
)

// defaultProbeEvery is how often the probe does a DORA unless
// -probe-every says otherwise. Its p99 over a 200-machine phase of a few
// seconds is about its second-worst sample: a shorter interval gives the
// tail more samples.
const defaultProbeEvery = 100 * time.Millisecond

// probeEnv names the interface in the probe process's environment: the
// bench starts its own binary (or the test binary, TestMain) with it;
// probeEveryEnv, the interval.
const (
	probeEnv      = "STORM_DHCP_PROBE"
	probeEveryEnv = "STORM_DHCP_PROBE_EVERY"
)

func probeMain(iface string) int {
	if err := runProbe(iface); err != nil {
		fmt.Fprintln(os.Stderr, "storm probe:", err)
		return 1
	}
	return 0
}

// runProbe is the probe process: a DORA as an installed OS sends it every
// STORM_DHCP_PROBE_EVERY (default defaultProbeEvery), each exchange printed as "UNIX_NANOS NANOS" on stdout, until
// stdin closes.
func runProbe(iface string) error {
	d, err := listenDHCPHere(iface)
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	out := bufio.NewWriter(os.Stdout)
	every := defaultProbeEvery
	if d, err := time.ParseDuration(os.Getenv(probeEveryEnv)); err == nil && d > 0 {
		every = d
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		res, err := d.dora(ctx, probeMAC, kindOS)
		if ctx.Err() != nil {
			return out.Flush()
		}
		now := time.Now()
		if err != nil {
			fmt.Fprintf(out, "%d error %s\n", now.UnixNano(), strings.ReplaceAll(err.Error(), "\n", " "))
		}
		for _, x := range res.Exchanges {
			fmt.Fprintf(out, "%d %d\n", now.UnixNano(), x.Nanoseconds())
		}
		out.Flush()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// probe is the running probe process, seen from the bench.
type probe struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}

	mu      sync.Mutex
	samples []probeSample
	errors  []string
}

type probeSample struct {
	at time.Time
	d  time.Duration
}

// startProbe runs this binary as the probe in ns, at the service's CPU
// priority (see above).
func startProbe(ctx context.Context, ns *netns.Namespace, iface string, every time.Duration) (*probe, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := ns.Command(context.Background(), self)
	if n := niceness(); n > 0 {
		cmd = ns.Command(context.Background(), "nice", "-n", strconv.Itoa(-n), self)
	}
	cmd.Env = append(os.Environ(), probeEnv+"="+iface, probeEveryEnv+"="+every.String())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the DHCP probe: %w", err)
	}
	p := &probe{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			at, rest, _ := strings.Cut(sc.Text(), " ")
			ns, err := strconv.ParseInt(at, 10, 64)
			if err != nil {
				continue
			}
			p.mu.Lock()
			if d, err := strconv.ParseInt(rest, 10, 64); err == nil {
				p.samples = append(p.samples, probeSample{time.Unix(0, ns), time.Duration(d)})
			} else {
				p.errors = append(p.errors, rest)
			}
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// stop ends the probe (stdin closed), then waits for its last lines.
func (p *probe) stop() {
	p.stdin.Close()
	waited := make(chan struct{})
	go func() { p.cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-waited
	}
	<-p.done
}

// between returns the exchanges that ended in [from, to], sorted, and the
// errors of the whole run.
func (p *probe) between(from, to time.Time) ([]time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Duration
	for _, s := range p.samples {
		if !s.at.Before(from) && !s.at.After(to) {
			out = append(out, s.d)
		}
	}
	slices.Sort(out)
	return out, len(p.errors)
}

// niceness is this process's nice value (0 when it cannot be read).
func niceness() int {
	// getpriority(2) returns 20 - nice for the raw syscall.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return 0
	}
	return 20 - prio
}
