package netboot

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Sink is where an AsyncRecorder writes, in batches (e.g. one bbolt
// transaction per batch).
type Sink interface {
	WriteEvents(ctx context.Context, evs []Event) error
	WriteLeases(ctx context.Context, ls []Lease) error
}

// AsyncRecorder is a Recorder that never blocks the caller: events go to
// a bounded buffer and are dropped (and counted) when it is full; leases
// are coalesced per MAC (only the newest matters) and written behind in
// batches. Run drains both.
//
// The DHCP workers call it for every packet, so a call costs a short
// critical section and no goroutine switch: Run is woken by the flush
// ticker, or once a whole batch of events is waiting, not per event.
//
// A renewal that changes nothing but the expiry is not written again
// while the stored lease still runs for more than half of the new one:
// the stored lease then covers the client at least until its renewal
// time (T1, half the lease), when it asks again. Without this, a busy
// segment rewrites every lease at every renewal.
type AsyncRecorder struct {
	sink     Sink
	log      *slog.Logger
	interval time.Duration
	maxBatch int
	buffer   int
	kick     chan struct{} // a batch of events is waiting

	evMu    sync.Mutex
	pending []Event // events waiting for Run, at most buffer
	spare   []Event // the other buffer, swapped in as Run takes pending

	mu      sync.Mutex
	leases  map[string]Lease       // pending, newest per MAC
	written map[string]storedLease // what the sink last took, per MAC
	maxPen  int

	droppedEvents   atomic.Uint64
	droppedLeases   atomic.Uint64
	writeErrors     atomic.Uint64
	unchangedLeases atomic.Uint64
}

// storedLease is what a lease's MAC last had written.
type storedLease struct {
	ip       netip.Addr
	hostname string
	expires  time.Time
}

// AsyncRecorderConfig sizes an AsyncRecorder. Zero values take defaults.
type AsyncRecorderConfig struct {
	Buffer        int           // events buffered before dropping (default 4096)
	PendingLeases int           // distinct MACs pending before dropping (default 65536); also how many written leases are remembered
	FlushInterval time.Duration // how often batches are written (default 500ms)
	MaxBatch      int           // events per WriteEvents call (default 1024)
	Logger        *slog.Logger
}

// NewAsyncRecorder returns a recorder writing to sink once Run runs.
func NewAsyncRecorder(sink Sink, cfg AsyncRecorderConfig) *AsyncRecorder {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 4096
	}
	if cfg.PendingLeases <= 0 {
		cfg.PendingLeases = 65536
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 500 * time.Millisecond
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &AsyncRecorder{
		sink:     sink,
		log:      cfg.Logger,
		interval: cfg.FlushInterval,
		maxBatch: cfg.MaxBatch,
		buffer:   cfg.Buffer,
		kick:     make(chan struct{}, 1),
		leases:   make(map[string]Lease),
		written:  make(map[string]storedLease),
		maxPen:   cfg.PendingLeases,
	}
}

// Event queues e, or drops it when the buffer is full.
func (r *AsyncRecorder) Event(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	r.evMu.Lock()
	if len(r.pending) >= r.buffer {
		r.evMu.Unlock()
		r.droppedEvents.Add(1)
		return
	}
	r.pending = append(r.pending, e)
	full := len(r.pending) == r.maxBatch
	r.evMu.Unlock()
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// Lease queues l for the next batch, replacing an older pending lease of
// the same MAC; a renewal that changes only the expiry, while the stored
// lease runs for more than half of l's time, is left out (see
// AsyncRecorder).
func (r *AsyncRecorder) Lease(l Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, pending := r.leases[l.MAC]
	if !pending {
		if w, ok := r.written[l.MAC]; ok && w.ip == l.IP && w.hostname == l.Hostname {
			now := time.Now()
			if w.expires.Sub(now) > l.Expires.Sub(now)/2 {
				r.unchangedLeases.Add(1)
				return
			}
		}
		if len(r.leases) >= r.maxPen {
			r.droppedLeases.Add(1)
			return
		}
	}
	r.leases[l.MAC] = l
}

// RecorderStats are an AsyncRecorder's counters.
type RecorderStats struct {
	DroppedEvents, DroppedLeases, WriteErrors uint64
	// UnchangedLeases counts renewals not written again (see
	// AsyncRecorder).
	UnchangedLeases uint64
}

// Stats returns the counters.
func (r *AsyncRecorder) Stats() RecorderStats {
	return RecorderStats{
		DroppedEvents:   r.droppedEvents.Load(),
		DroppedLeases:   r.droppedLeases.Load(),
		WriteErrors:     r.writeErrors.Load(),
		UnchangedLeases: r.unchangedLeases.Load(),
	}
}

// Run writes batches until ctx is done, then flushes what is left (with a
// short deadline of its own, since ctx is already cancelled).
func (r *AsyncRecorder) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			r.flushEvents(fctx)
			r.flushLeases(fctx)
			return nil
		case <-r.kick:
			r.flushEvents(ctx)
		case <-t.C:
			r.flushEvents(ctx)
			r.flushLeases(ctx)
		}
	}
}

// flushEvents writes the waiting events in batches of at most maxBatch.
func (r *AsyncRecorder) flushEvents(ctx context.Context) {
	r.evMu.Lock()
	batch := r.pending
	r.pending, r.spare = r.spare[:0], nil
	r.evMu.Unlock()
	for rest := batch; len(rest) > 0; {
		n := min(len(rest), r.maxBatch)
		if err := r.sink.WriteEvents(ctx, rest[:n]); err != nil {
			r.writeErrors.Add(1)
			r.log.Warn("netboot: writing boot events failed; batch dropped", "events", n, "err", err)
		}
		rest = rest[n:]
	}
	clear(batch) // no stale details kept alive
	r.evMu.Lock()
	r.spare = batch[:0]
	r.evMu.Unlock()
}

func (r *AsyncRecorder) flushLeases(ctx context.Context) {
	r.mu.Lock()
	if len(r.leases) == 0 {
		r.mu.Unlock()
		return
	}
	ls := make([]Lease, 0, len(r.leases))
	for _, l := range r.leases {
		ls = append(ls, l)
	}
	clear(r.leases)
	r.mu.Unlock()
	if err := r.sink.WriteLeases(ctx, ls); err != nil {
		r.writeErrors.Add(1)
		r.log.Warn("netboot: writing leases failed; batch dropped", "leases", len(ls), "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.written)+len(ls) > r.maxPen {
		// Forget rather than grow: those MACs' next renewals are written.
		clear(r.written)
	}
	for _, l := range ls {
		if _, newer := r.leases[l.MAC]; !newer {
			r.written[l.MAC] = storedLease{ip: l.IP, hostname: l.Hostname, expires: l.Expires}
		}
	}
}

// MemoryRecorder keeps everything in memory; for tests and the lab.
// It is also a Sink.
type MemoryRecorder struct {
	mu     sync.Mutex
	events []Event
	leases map[string]Lease
	notify chan struct{}
}

// NewMemoryRecorder returns an empty MemoryRecorder.
func NewMemoryRecorder() *MemoryRecorder {
	return &MemoryRecorder{leases: make(map[string]Lease), notify: make(chan struct{}, 1)}
}

// Event appends e.
func (m *MemoryRecorder) Event(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	m.mu.Lock()
	m.events = append(m.events, e)
	m.mu.Unlock()
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// Lease stores l.
func (m *MemoryRecorder) Lease(l Lease) {
	m.mu.Lock()
	m.leases[l.MAC] = l
	m.mu.Unlock()
}

// WriteEvents implements Sink.
func (m *MemoryRecorder) WriteEvents(_ context.Context, evs []Event) error {
	for _, e := range evs {
		m.Event(e)
	}
	return nil
}

// WriteLeases implements Sink.
func (m *MemoryRecorder) WriteLeases(_ context.Context, ls []Lease) error {
	for _, l := range ls {
		m.Lease(l)
	}
	return nil
}

// Events returns a copy of the events so far.
func (m *MemoryRecorder) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.events...)
}

// Leases returns a copy of the leases.
func (m *MemoryRecorder) Leases() map[string]Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Lease, len(m.leases))
	for k, v := range m.leases {
		out[k] = v
	}
	return out
}

// WaitFor waits until an event satisfies match, or ctx ends.
func (m *MemoryRecorder) WaitFor(ctx context.Context, match func(Event) bool) (Event, error) {
	for {
		for _, e := range m.Events() {
			if match(e) {
				return e, nil
			}
		}
		select {
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-m.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
}
