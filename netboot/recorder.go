package netboot

import (
	"context"
	"log/slog"
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
type AsyncRecorder struct {
	sink     Sink
	log      *slog.Logger
	events   chan Event
	interval time.Duration
	maxBatch int

	mu     sync.Mutex
	leases map[string]Lease // pending, newest per MAC
	maxPen int

	droppedEvents atomic.Uint64
	droppedLeases atomic.Uint64
	writeErrors   atomic.Uint64
}

// AsyncRecorderConfig sizes an AsyncRecorder. Zero values take defaults.
type AsyncRecorderConfig struct {
	Buffer        int           // events buffered before dropping (default 4096)
	PendingLeases int           // distinct MACs pending before dropping (default 65536)
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
		events:   make(chan Event, cfg.Buffer),
		interval: cfg.FlushInterval,
		maxBatch: cfg.MaxBatch,
		leases:   make(map[string]Lease),
		maxPen:   cfg.PendingLeases,
	}
}

// Event queues e, or drops it when the buffer is full.
func (r *AsyncRecorder) Event(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	select {
	case r.events <- e:
	default:
		r.droppedEvents.Add(1)
	}
}

// Lease queues l for the next batch, replacing an older pending lease of
// the same MAC.
func (r *AsyncRecorder) Lease(l Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.leases[l.MAC]; !ok && len(r.leases) >= r.maxPen {
		r.droppedLeases.Add(1)
		return
	}
	r.leases[l.MAC] = l
}

// RecorderStats are an AsyncRecorder's counters.
type RecorderStats struct {
	DroppedEvents, DroppedLeases, WriteErrors uint64
}

// Stats returns the counters.
func (r *AsyncRecorder) Stats() RecorderStats {
	return RecorderStats{
		DroppedEvents: r.droppedEvents.Load(),
		DroppedLeases: r.droppedLeases.Load(),
		WriteErrors:   r.writeErrors.Load(),
	}
}

// Run writes batches until ctx is done, then flushes what is left (with a
// short deadline of its own, since ctx is already cancelled).
func (r *AsyncRecorder) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	batch := make([]Event, 0, r.maxBatch)
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			for {
				select {
				case e := <-r.events:
					batch = append(batch, e)
					if len(batch) < r.maxBatch {
						continue
					}
					batch = r.flushEvents(fctx, batch)
					continue
				default:
				}
				break
			}
			r.flushEvents(fctx, batch)
			r.flushLeases(fctx)
			return nil
		case e := <-r.events:
			batch = append(batch, e)
			if len(batch) >= r.maxBatch {
				batch = r.flushEvents(ctx, batch)
			}
		case <-t.C:
			batch = r.flushEvents(ctx, batch)
			r.flushLeases(ctx)
		}
	}
}

func (r *AsyncRecorder) flushEvents(ctx context.Context, batch []Event) []Event {
	if len(batch) == 0 {
		return batch
	}
	if err := r.sink.WriteEvents(ctx, batch); err != nil {
		r.writeErrors.Add(1)
		r.log.Warn("netboot: writing boot events failed; batch dropped", "events", len(batch), "err", err)
	}
	return batch[:0]
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
