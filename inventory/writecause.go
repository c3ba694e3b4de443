package inventory

import (
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// WriteCause is what one call site has cost the single writer since
// Open: Writes is how many writes it made (each member of a group commit
// counts once), Commits how many write transactions it committed itself
// (a group commit counts for the caller whose wait committed it; a write
// behind flushed by its timer counts for flushBehind).
//
// Op is the store's method that was called (RecordJobUpdate, AppendEvent,
// flushBehind...), Caller the function outside this package that called
// it. Both come from the stack, so every write path is counted without
// naming itself: a bench reads where the commits of a storm went, and a
// new path that bypasses the group commit shows up under its own name.
type WriteCause struct {
	Op, Caller      string
	Writes, Commits uint64
}

type writeSite struct{ op, caller string }

type writeCount struct{ writes, commits uint64 }

// writeCauses counts writes and commits by site. A mutex, not atomics per
// site: writes are thousands a second at most, and the map grows.
type writeCauses struct {
	mu sync.Mutex
	m  map[writeSite]*writeCount
}

func (w *writeCauses) add(site writeSite, writes, commits uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[writeSite]*writeCount{}
	}
	c := w.m[site]
	if c == nil {
		c = &writeCount{}
		w.m[site] = c
	}
	c.writes += writes
	c.commits += commits
}

const (
	modulePrefix = "github.com/metalhall/metalhall/"
	storePrefix  = modulePrefix + "inventory.(*Store)."
)

// callSite names the store method the caller's goroutine is in (the
// outermost of the Store's methods on its stack) and the function that
// called it, and
// says whether the write is a group commit's (commitJobUpdates is on the
// stack), whose members were counted as they queued.
func callSite() (site writeSite, grouped bool) {
	var pcs [48]uintptr
	n := runtime.Callers(3, pcs[:]) // runtime.Callers, callSite, its caller
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if rest, ok := strings.CutPrefix(f.Function, storePrefix); ok {
			site.op = rest
			if site.op == "commitJobUpdates" {
				grouped = true
			}
		} else if site.op != "" {
			site.caller = strings.TrimPrefix(f.Function, modulePrefix)
			break
		}
		if !more {
			break
		}
	}
	return site, grouped
}

// countWrite counts one write of the caller's site that a group commit
// will carry.
func (s *Store) countWrite() {
	site, _ := callSite()
	s.causes.add(site, 1, 0)
}

// countCommit counts the write transaction the caller is about to run:
// one commit for its site, and one write too unless it is a group
// commit's, whose writes were counted as they queued.
func (s *Store) countCommit() {
	site, grouped := callSite()
	var writes uint64 = 1
	if grouped {
		writes = 0
	}
	s.causes.add(site, writes, 1)
}

// WriteCauses lists writes and commits by call site, busiest committer
// first.
func (s *Store) WriteCauses() []WriteCause {
	s.causes.mu.Lock()
	out := make([]WriteCause, 0, len(s.causes.m))
	for k, c := range s.causes.m {
		out = append(out, WriteCause{Op: k.op, Caller: k.caller, Writes: c.writes, Commits: c.commits})
	}
	s.causes.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Commits != out[j].Commits {
			return out[i].Commits > out[j].Commits
		}
		if out[i].Op != out[j].Op {
			return out[i].Op < out[j].Op
		}
		return out[i].Caller < out[j].Caller
	})
	return out
}

var (
	storeWritesDesc = prometheus.NewDesc("metalhall_store_writes_total",
		"Writes to the store by call site (op: the store's method; caller: the function that called it); a write that shares a group commit counts here once.",
		[]string{"op", "caller"}, nil)
	storeCommitsDesc = prometheus.NewDesc("metalhall_store_write_commits_total",
		"Write transactions by the call site that committed them (a group commit counts for the writer whose wait committed it, or for flushBehind when the write-behind timer did).",
		[]string{"op", "caller"}, nil)
)

// Collector returns the store's write counters by call site, read at
// scrape time.
func (s *Store) Collector() prometheus.Collector { return causeCollector{s} }

type causeCollector struct{ s *Store }

func (c causeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeWritesDesc
	ch <- storeCommitsDesc
}

func (c causeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c.s.WriteCauses() {
		ch <- prometheus.MustNewConstMetric(storeWritesDesc, prometheus.CounterValue, float64(w.Writes), w.Op, w.Caller)
		ch <- prometheus.MustNewConstMetric(storeCommitsDesc, prometheus.CounterValue, float64(w.Commits), w.Op, w.Caller)
	}
}
