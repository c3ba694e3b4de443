package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/lab/redfish"
)

type phaseResult struct {
	Name                  string
	Probe                 []time.Duration // the DHCP probe's exchanges in this phase, sorted
	ProbeErrors           int             // the probe's failed DORAs over the whole run
	Machines, OK          int
	Failures              []string
	Submit, Wall          time.Duration
	CPUBefore, CPUAfter   float64
	TxnsBefore, TxnsAfter uint64
	// CausesBefore and CausesAfter are the store's writes and commits by
	// call site, read with the totals.
	CausesBefore, CausesAfter map[writeSite]writeCount
	Bytes                     int64
	Retransmits               int
	CutOff                    int
	Samples                   map[string][]time.Duration
	// BMCs is what the emulated BMCs saw in this phase.
	BMCs     redfish.FleetStats
	submitMu sync.Mutex
}

func (p *phaseResult) addSubmit(d time.Duration) {
	p.submitMu.Lock()
	p.Samples[stSubmit] = append(p.Samples[stSubmit], d)
	p.submitMu.Unlock()
}

type rate struct {
	Bytes int64
	Span  time.Duration
}

func (r rate) MBps() float64 {
	if r.Span <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Span.Seconds()
}

// streaming is what the storm's image streams added up to.
type streaming struct {
	Bytes int64
	Busy  time.Duration // time with at least one stream running
	Span  time.Duration // first request to last byte
	Peak  int           // most streams at once
}

type sideResult struct {
	Name      string
	Wall      time.Duration
	Bytes     int64
	CPU       float64
	PerClient []time.Duration
}

type report struct {
	cfg           config
	args          []string
	began         time.Time
	wall          time.Duration
	info          []string
	log           []string
	serveArgs     []string
	serveLog      string
	phases        []*phaseResult
	stormImage    streaming
	sides         []sideResult
	hwmAfterStorm int64
	hwmEnd        int64
	cpuEnd        float64
	err           error
}

func (r *report) machineInfo() {
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Join(strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:], " ")
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	rev, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	nginxV, _ := exec.Command("nginx", "-v").CombinedOutput()
	r.info = append(r.info,
		fmt.Sprintf("machine: nproc %d, CPU %s, MemTotal %s, kernel %s", runtime.NumCPU(), cpu, mem, strings.TrimSpace(string(kernel))),
		fmt.Sprintf("tree: %s, %s, %s", strings.TrimSpace(string(rev)), runtime.Version(), strings.TrimSpace(string(nginxV))),
		"load average at start: "+loadavg())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// pct is the nearest-rank percentile of sorted samples.
func pct(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

var stageOrder = []string{stSubmit, stDHCP, stDHCPX, stScript, stBootFiles, stCallHome, stTask, stImage, stDone, stMetadata, stE2E}

func (r *report) write(stdout io.Writer, dir string) error {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# metalhall boot storm, %s", r.began.Format(time.RFC3339))
	w("command: %s", strings.Join(r.args, " "))
	for _, l := range r.info {
		w("%s", l)
	}
	w("load average at end: %s", loadavg())
	w("settings: n=%d per-rack=%d image=%d MiB bootfiles=2x%d KiB max-active=%d streams=%d progress-every=%v probe-every=%v",
		r.cfg.N, r.cfg.PerRack, r.cfg.ImageMiB, r.cfg.BootFileKiB, r.cfg.MaxActive, r.cfg.Streams, r.cfg.ProgressEvery, r.cfg.ProbeEvery)
	w("serve: metalhall %s", strings.Join(r.serveArgs, " "))
	for _, v := range []string{"GOGC", "GOMAXPROCS"} {
		if val := os.Getenv("STORM_SERVE_" + v); val != "" {
			w("serve's %s: %s", v, val)
		}
	}
	w("")
	w("## steps")
	for _, l := range r.log {
		w("%s", l)
	}
	for _, p := range r.phases {
		w("")
		w("## %s: %d machines, %d done, %d failed", p.Name, p.Machines, p.OK, len(p.Failures))
		w("total time %.1f s (submitting the jobs took %.1f s)", p.Wall.Seconds(), p.Submit.Seconds())
		cpu := p.CPUAfter - p.CPUBefore
		w("service CPU %.1f s (%.1f ms per machine, %.0f%% of one core over the phase)", cpu, cpu*1000/float64(p.Machines), 100*cpu/p.Wall.Seconds())
		txns := p.TxnsAfter - p.TxnsBefore
		w("bbolt write transactions %d (%.1f per machine)", txns, float64(txns)/float64(p.Machines))
		writeBreakdown(w, p)
		w("%-11s %8s %9s %9s %9s %9s", "stage", "count", "p50 ms", "p99 ms", "max ms", "mean ms")
		for _, st := range stageOrder {
			s := slices.Clone(p.Samples[st])
			if len(s) == 0 {
				continue
			}
			slices.Sort(s)
			var sum time.Duration
			for _, d := range s {
				sum += d
			}
			w("%-11s %8d %9s %9s %9s %9s", st, len(s), ms(pct(s, 50)), ms(pct(s, 99)), ms(s[len(s)-1]), ms(sum/time.Duration(len(s))))
		}
		w("DHCP retransmissions (a request sent again after 1, 2, 4, 8 s without an answer): %d", p.Retransmits)
		if s := p.Probe; len(s) > 0 {
			w("DHCP probe (its own process, at the service's CPU priority; request → reply): %d exchanges, p50 %s ms, p99 %s ms, max %s ms; failed DORAs over the run: %d",
				len(s), ms(pct(s, 50)), ms(pct(s, 99)), ms(s[len(s)-1]), p.ProbeErrors)
		}
		if st := p.BMCs; st.Requests > 0 {
			w("BMC connections accepted (TCP, counted by the emulated BMCs): %d for %d requests (%.1f per machine, %.1f requests per connection)",
				st.Connections, st.Requests, float64(st.Connections)/float64(p.Machines), float64(st.Requests)/float64(max(st.Connections, 1)))
			w("%s", gapLine(st))
		}
		if p.Name == "commission" {
			w("agents powered off by the service before their done was answered (a commission does not wait for done): %d", p.CutOff)
		}
		if p.Bytes > 0 {
			w("image bytes streamed and verified: %d", p.Bytes)
		}
		for i, f := range p.Failures {
			if i == 20 {
				w("... and %d more failures", len(p.Failures)-20)
				break
			}
			w("FAILURE %s", f)
		}
	}
	if r.stormImage.Bytes > 0 {
		w("")
		si := r.stormImage
		w("storm image streaming: %d bytes; %.1f s from the first image request to the last byte (%.1f MB/s over that span); streams running %.1f s of it (%.1f MB/s while any ran); at most %d at once",
			si.Bytes, si.Span.Seconds(), rate{si.Bytes, si.Span}.MBps(), si.Busy.Seconds(), rate{si.Bytes, si.Busy}.MBps(), si.Peak)
	}
	if len(r.sides) > 0 {
		w("")
		w("## side by side: the same image to the same %d clients (each from its own address), %d at once, sha256 checked", r.cfg.N, r.cfg.Streams)
		w("%-10s %8s %10s %12s %12s %12s %10s", "server", "wall s", "MB/s", "client p50", "client p99", "client max", "server CPU")
		for _, s := range r.sides {
			rt := rate{s.Bytes, s.Wall}
			w("%-10s %8.1f %10.1f %10s ms %10s ms %10s ms %8.2f s", s.Name, s.Wall.Seconds(), rt.MBps(),
				ms(pct(s.PerClient, 50)), ms(pct(s.PerClient, 99)), ms(pct(s.PerClient, 100)), s.CPU)
		}
		mbps := map[string]float64{}
		for _, s := range r.sides {
			mbps[s.Name] = rate{s.Bytes, s.Wall}.MBps()
		}
		// Like for like: metalhall's admin listener serves blobs over TLS,
		// so it is set against nginx over TLS; the storm's own streams come
		// from the provisioning listener, plain HTTP, as nginx's plain side.
		if mh, tl, pl := mbps["metalhall"], mbps["nginx-tls"], mbps["nginx"]; mh > 0 && tl > 0 && pl > 0 {
			w("ratio of aggregate rates: side by side metalhall (TLS)/nginx-tls %.2f×, metalhall (TLS)/nginx (plain) %.2f×; the storm's streams inside the jobs (provisioning listener, plain), while any ran, /nginx (plain) %.2f×",
				mh/tl, mh/pl, rate{r.stormImage.Bytes, r.stormImage.Busy}.MBps()/pl)
		}
	}
	w("")
	w("service peak RSS (VmHWM): %d KiB after the storm, %d KiB at the end; service CPU over the whole run %.1f s", r.hwmAfterStorm, r.hwmEnd, r.cpuEnd)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	w("bench process (all simulated machines and clients) CPU: %.1f s user, %.1f s system",
		time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds())
	w("wall time of the whole run: %.1f s", r.wall.Seconds())
	if r.err != nil {
		w("")
		w("RESULT: FAILED: %v", r.err)
		if r.serveLog != "" {
			w("last lines of serve.log:")
			w("%s", tail(r.serveLog, 40))
		}
	} else {
		w("")
		w("RESULT: ok")
	}
	out := b.String()
	io.WriteString(stdout, out)
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := fmt.Sprintf("storm-%s-n%d.txt", r.began.Format("20060102T150405Z"), r.cfg.N)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "storm: wrote %s\n", path)
	return nil
}

// writeBreakdown prints where a phase's writes and commits went, by the
// call site the store counts them under, busiest committer first: a
// group commit counts for the writer whose wait committed it.
func writeBreakdown(w func(string, ...any), p *phaseResult) {
	type row struct {
		site            writeSite
		writes, commits float64
	}
	var rows []row
	var writes, commits float64
	for site, after := range p.CausesAfter {
		before := p.CausesBefore[site]
		r := row{site, after.Writes - before.Writes, after.Commits - before.Commits}
		if r.writes == 0 && r.commits == 0 {
			continue
		}
		rows = append(rows, r)
		writes += r.writes
		commits += r.commits
	}
	if len(rows) == 0 {
		return
	}
	slices.SortFunc(rows, func(a, b row) int {
		if a.commits != b.commits {
			return cmp.Compare(b.commits, a.commits)
		}
		if a.writes != b.writes {
			return cmp.Compare(b.writes, a.writes)
		}
		return strings.Compare(a.site.Op+a.site.Caller, b.site.Op+b.site.Caller)
	})
	n := float64(p.Machines)
	w("writes by call site (per machine; a commit counts for the writer that committed it): %.1f writes in %.1f commits", writes/n, commits/n)
	w("%9s %9s  %-24s %s", "writes", "commits", "op", "caller")
	for _, r := range rows {
		w("%9.2f %9.2f  %-24s %s", r.writes/n, r.commits/n, r.site.Op, r.site.Caller)
	}
}

// gapLine is the idle gaps between one BMC's requests as a cumulative
// distribution: how many a connection kept open for each bound would
// have bridged.
func gapLine(st redfish.FleetStats) string {
	var total int64
	for _, n := range st.Gaps {
		total += n
	}
	var b strings.Builder
	fmt.Fprintf(&b, "BMC idle gaps (an answer to the next request on the same BMC): %d;", total)
	var cum int64
	for i, bound := range redfish.GapBounds {
		cum += st.Gaps[i]
		fmt.Fprintf(&b, " ≤%v %d", bound, cum)
	}
	fmt.Fprintf(&b, ", longer %d", st.Gaps[len(redfish.GapBounds)])
	return b.String()
}
