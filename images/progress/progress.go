// Package progress counts the bytes going through a reader so that a
// command can show a progress line (bytes, rate, ETA) while an upload or a
// download runs. It has no dependencies, so the CLI and the agent can use
// it without pulling in the store.
package progress

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Reader counts what is read through it. Read is called by one goroutine
// (the transfer); Stats may be called concurrently from another (the
// display).
type Reader struct {
	r     io.Reader
	total int64 // expected bytes; <= 0 when unknown
	n     atomic.Int64
	start time.Time
	now   func() time.Time

	mu     sync.Mutex
	lastT  time.Time
	lastN  int64
	rate   float64 // bytes/s, smoothed
	primed bool
}

// NewReader wraps r; total is the expected size, or 0 when unknown.
func NewReader(r io.Reader, total int64) *Reader {
	return newReader(r, total, time.Now)
}

func newReader(r io.Reader, total int64, now func() time.Time) *Reader {
	t := now()
	return &Reader{r: r, total: total, start: t, lastT: t, now: now}
}

func (p *Reader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

// Stats is a snapshot of a transfer.
type Stats struct {
	Bytes   int64
	Total   int64         // 0 when unknown
	Rate    float64       // bytes per second, smoothed over the last seconds
	ETA     time.Duration // 0 when unknown
	Elapsed time.Duration
}

// Stats returns the counters now. The rate is an exponential average of
// the rate between calls (weight 0.3 for the newest sample), so the figure
// is steady when called about once a second.
func (p *Reader) Stats() Stats {
	now := p.now()
	n := p.n.Load()
	p.mu.Lock()
	if dt := now.Sub(p.lastT).Seconds(); dt > 0.05 {
		cur := float64(n-p.lastN) / dt
		if p.primed {
			p.rate = 0.7*p.rate + 0.3*cur
		} else {
			p.rate, p.primed = cur, true
		}
		p.lastT, p.lastN = now, n
	}
	rate := p.rate
	p.mu.Unlock()
	st := Stats{Bytes: n, Total: p.total, Rate: rate, Elapsed: now.Sub(p.start)}
	if p.total > 0 && rate > 0 && n < p.total {
		st.ETA = time.Duration(float64(p.total-n) / rate * float64(time.Second)).Round(time.Second)
	}
	return st
}

// String renders one progress line, e.g.
// "1.2 GiB / 4.0 GiB (30%)  312.4 MB/s  ETA 9s".
func (s Stats) String() string {
	out := Bytes(s.Bytes)
	if s.Total > 0 {
		out += fmt.Sprintf(" / %s (%d%%)", Bytes(s.Total), s.Bytes*100/s.Total)
	}
	out += fmt.Sprintf("  %.1f MB/s", s.Rate/1e6)
	if s.ETA > 0 {
		out += "  ETA " + s.ETA.String()
	}
	return out
}

// Bytes renders a size in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
