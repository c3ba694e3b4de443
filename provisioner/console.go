package provisioner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
)

// Serial consoles. A BMC gives one Serial-over-LAN session at a time, so
// the service holds at most one per machine and shares it: the capture of
// a running job's console (read-only, kept with the job) and one operator
// attached to it (read-write). The session opens with its first user and
// closes with its last.

// MaxConsoles bounds the SOL sessions the service holds at once (each is
// an ipmitool process and a BMC session).
const MaxConsoles = 256

// ErrNoConsole means the machine's BMC has no serial console the service
// can use (it is not IPMI).
var ErrNoConsole = bmc.ErrNoConsole

// ConsoleBusyError refuses a second operator on a machine's console.
type ConsoleBusyError struct {
	Machine string
	Holder  string // the token ID of the operator attached
	Since   time.Time
}

func (e *ConsoleBusyError) Error() string {
	return fmt.Sprintf("machine %q: a console session is already open (token %s, since %s)", e.Machine, e.Holder, e.Since.UTC().Format(time.RFC3339))
}

// ConsoleTakenOverError ends an operator's session when staff take the
// console over.
type ConsoleTakenOverError struct{ By string }

func (e *ConsoleTakenOverError) Error() string {
	return fmt.Sprintf("console taken over by token %s", e.By)
}

// ErrTooManyConsoles refuses a session past MaxConsoles.
var ErrTooManyConsoles = fmt.Errorf("the service already holds %d console sessions: try again when one ends", MaxConsoles)

// consoles is the service's SOL sessions, by machine. Its zero value is
// ready to use.
type consoles struct {
	mu   sync.Mutex
	hubs map[string]*consoleHub
}

// consoleHub is one machine's SOL session and its users.
type consoleHub struct {
	machine string
	ready   chan struct{} // closed once sol or openErr is set
	sol     *bmc.SOL
	openErr error
	refs    int // users, counted under consoles.mu

	mu       sync.Mutex
	captures map[*ring]struct{}
	live     *liveConsole
	ended    chan struct{} // closed when the session has ended
	endErr   error
}

// hub returns m's session, opening it when no one holds it. Release it
// with put.
func (c *consoles) hub(ctx context.Context, a *Machines, m *inventory.Machine) (*consoleHub, error) {
	if m.BMC.Protocol != inventory.ProtocolIPMI {
		return nil, fmt.Errorf("machine %q (BMC protocol %s): %w", m.Name, m.BMC.Protocol, ErrNoConsole)
	}
	c.mu.Lock()
	if c.hubs == nil {
		c.hubs = map[string]*consoleHub{}
	}
	h := c.hubs[m.Name]
	opener := h == nil
	if opener {
		if len(c.hubs) >= MaxConsoles {
			c.mu.Unlock()
			return nil, ErrTooManyConsoles
		}
		h = &consoleHub{machine: m.Name, ready: make(chan struct{}), captures: map[*ring]struct{}{}, ended: make(chan struct{})}
		c.hubs[m.Name] = h
	}
	h.refs++
	c.mu.Unlock()

	if opener {
		ep, err := a.Endpoint(ctx, m)
		if err == nil {
			// Not recorded as the BMC's health: a BMC without SOL still
			// controls power and boot as well as ever.
			h.sol, err = a.Ctl.OpenSOL(ctx, ep)
		}
		if err != nil {
			h.openErr = fmt.Errorf("machine %q: serial console: %w", m.Name, err)
			close(h.ended)
		} else {
			go c.pump(h)
		}
		close(h.ready)
	} else {
		select {
		case <-h.ready:
		case <-ctx.Done():
			c.put(h)
			return nil, ctx.Err()
		}
	}
	if h.openErr != nil {
		c.put(h)
		return nil, h.openErr
	}
	return h, nil
}

// put releases a user's hold on h; the last one closes the session.
func (c *consoles) put(h *consoleHub) {
	c.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last && c.hubs[h.machine] == h {
		delete(c.hubs, h.machine)
	}
	c.mu.Unlock()
	if last && h.sol != nil {
		h.sol.Close()
	}
}

// pump copies the session's output to its users until it ends. It never
// waits for a user: captures are memory, and a live operator too slow to
// keep up loses output (counted) rather than holding up the capture.
func (c *consoles) pump(h *consoleHub) {
	buf := make([]byte, 16<<10)
	for {
		n, err := h.sol.Read(buf)
		if n > 0 {
			h.mu.Lock()
			for r := range h.captures {
				r.Write(buf[:n])
			}
			if l := h.live; l != nil {
				l.deliver(buf[:n])
			}
			h.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	h.mu.Lock()
	h.endErr = h.sol.Err()
	if h.endErr == nil {
		h.endErr = errors.New("the BMC ended the Serial-over-LAN session")
	}
	if h.live != nil {
		h.live.end(h.endErr)
		h.live = nil
	}
	close(h.ended)
	h.mu.Unlock()
	// A session that ended by itself is no one's any more: the next user
	// opens a new one.
	c.mu.Lock()
	if c.hubs[h.machine] == h {
		delete(c.hubs, h.machine)
	}
	c.mu.Unlock()
}

// closeAll ends every session (the service is stopping).
func (c *consoles) closeAll() {
	c.mu.Lock()
	hubs := make([]*consoleHub, 0, len(c.hubs))
	for _, h := range c.hubs {
		hubs = append(hubs, h)
	}
	c.mu.Unlock()
	for _, h := range hubs {
		<-h.ready
		if h.sol != nil {
			h.sol.Close()
		}
	}
}

// --- an operator's session ---

// liveConsole is an operator attached to a machine's console.
type liveConsole struct {
	hub    *consoleHub
	holder string
	since  time.Time
	out    chan []byte
	done   chan struct{}
	once   sync.Once
	err    error
	rest   []byte // the part of a chunk a short Read left
	mu     sync.Mutex
	lost   int64 // output dropped because the operator did not keep up
	c      *consoles
	closed sync.Once
}

func (l *liveConsole) deliver(p []byte) {
	select {
	case l.out <- append([]byte(nil), p...):
	case <-l.done:
	default:
		l.mu.Lock()
		l.lost += int64(len(p))
		l.mu.Unlock()
	}
}

func (l *liveConsole) end(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

// Read returns the machine's output. After the session ended it returns
// the reason: io.EOF when the operator closed it, a *ConsoleTakenOverError,
// or why the BMC session ended.
// Read is not safe to call from two goroutines at once.
func (l *liveConsole) Read(p []byte) (int, error) {
	if len(l.rest) == 0 {
		select {
		case l.rest = <-l.out:
		case <-l.done:
			select {
			case l.rest = <-l.out:
			default:
				return 0, l.err
			}
		}
	}
	n := copy(p, l.rest)
	l.rest = l.rest[n:]
	return n, nil
}

// Write sends keystrokes to the machine.
func (l *liveConsole) Write(p []byte) (int, error) {
	select {
	case <-l.done:
		return 0, l.err
	default:
	}
	return l.hub.sol.Write(p)
}

// Close detaches the operator; the session stays open for its other users.
func (l *liveConsole) Close() error {
	l.closed.Do(func() {
		l.end(io.EOF)
		h := l.hub
		h.mu.Lock()
		if h.live == l {
			h.live = nil
		}
		h.mu.Unlock()
		l.c.put(h)
	})
	return nil
}

// Lost is how many bytes of output the operator did not get because it
// read too slowly.
func (l *liveConsole) Lost() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// AttachConsole attaches an operator (holder: a token ID) to the machine's
// serial console: Read is what the machine prints, Write what it is sent,
// Close detaches. Only one operator at a time: another gets a
// *ConsoleBusyError, unless force, which ends the first one's session with
// a *ConsoleTakenOverError. A machine whose BMC is not IPMI gets
// ErrNoConsole.
func (a *Machines) AttachConsole(ctx context.Context, m *inventory.Machine, holder string, force bool) (io.ReadWriteCloser, error) {
	c := &a.consoles
	h, err := c.hub(ctx, a, m)
	if err != nil {
		return nil, err
	}
	l := &liveConsole{hub: h, holder: holder, since: time.Now(), out: make(chan []byte, 256), done: make(chan struct{}), c: c}
	h.mu.Lock()
	select {
	case <-h.ended:
		h.mu.Unlock()
		c.put(h)
		return nil, fmt.Errorf("machine %q: serial console: %w", m.Name, h.endErr)
	default:
	}
	if old := h.live; old != nil {
		if !force {
			h.mu.Unlock()
			c.put(h)
			return nil, &ConsoleBusyError{Machine: m.Name, Holder: old.holder, Since: old.since}
		}
		old.end(&ConsoleTakenOverError{By: holder})
	}
	h.live = l
	h.mu.Unlock()
	return l, nil
}

// CloseConsoles ends every serial console session: call it when the
// service stops, so that attached operators are let go.
func (a *Machines) CloseConsoles() { a.consoles.closeAll() }

// --- the capture of a job's console ---

// ring keeps the last max bytes written to it.
type ring struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int64
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total += int64(len(p))
	r.buf = append(r.buf, p...)
	if over := len(r.buf) - r.max; over > 0 {
		// Keep the tail; copy down once it is twice over, not per write.
		r.buf = r.buf[over:]
		if cap(r.buf) > 2*r.max {
			r.buf = append(make([]byte, 0, r.max+r.max/4), r.buf...)
		}
	}
	return len(p), nil
}

func (r *ring) snapshot() (data []byte, total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf...), r.total
}

// consoleCapture follows a machine's console for a job, reconnecting when
// the session drops, until stopped.
type consoleCapture struct {
	r     *ring
	stop  context.CancelFunc
	done  chan struct{}
	saved int64 // total at the last save
}

// captureConsole starts capturing m's console into a ring that begins
// with prev (what an earlier run of the job captured). It returns nil for
// machines without a console the service can use.
func (a *Machines) captureConsole(ctx context.Context, m *inventory.Machine, prev []byte, prevTotal int64) *consoleCapture {
	if m.BMC.Protocol != inventory.ProtocolIPMI || a.Ctl == nil {
		return nil
	}
	r := &ring{max: inventory.MaxConsoleLog}
	r.Write(prev)
	r.total = prevTotal
	if len(prev) > 0 {
		fmt.Fprintf(r, "\r\n[metalhall: console capture resumed %s]\r\n", time.Now().UTC().Format(time.RFC3339))
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cc := &consoleCapture{r: r, stop: cancel, done: make(chan struct{}), saved: r.total}
	go func() {
		defer close(cc.done)
		backoff := time.Second
		for ctx.Err() == nil {
			h, err := a.consoles.hub(ctx, a, m)
			if err == nil {
				h.mu.Lock()
				h.captures[r] = struct{}{}
				h.mu.Unlock()
				backoff = time.Second
				select {
				case <-ctx.Done():
				case <-h.ended:
					if ctx.Err() == nil {
						fmt.Fprintf(r, "\r\n[metalhall: console session ended (%v); reconnecting]\r\n", h.endErr)
					}
				}
				h.mu.Lock()
				delete(h.captures, r)
				h.mu.Unlock()
				a.consoles.put(h)
			} else {
				var be *bmc.Error
				if errors.Is(err, ErrNoConsole) || errors.As(err, &be) && (be.Kind == bmc.KindUnsupported || be.Kind == bmc.KindAuth) {
					// Retrying cannot help, and wrong credentials
					// tried again lock accounts on some BMCs.
					fmt.Fprintf(r, "\r\n[metalhall: no console capture: %v]\r\n", err)
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
	return cc
}

// close stops the capture and waits for it to let go of the session.
func (cc *consoleCapture) close() {
	cc.stop()
	<-cc.done
}

// captures are the consoles the engine captures, by job ID.
type captures struct {
	mu sync.Mutex
	m  map[string]*consoleCapture
}

// consoleCapturer is what captures a job's console: the BMC adapter
// (Machines) does; the engine's test doubles do not.
type consoleCapturer interface {
	captureConsole(ctx context.Context, m *inventory.Machine, prev []byte, prevTotal int64) *consoleCapture
}

// startCapture begins capturing the console of job j's machine, after
// what an earlier run of the job kept (a restart resumes the log).
func (e *Engine) startCapture(ctx context.Context, j *inventory.Job) {
	cc, ok := e.bmc.(consoleCapturer)
	if !ok || j.Kind == inventory.JobPower {
		return
	}
	m, err := e.inv.Machine(ctx, j.Machine)
	if err != nil {
		return
	}
	var prev []byte
	var total int64
	if l, err := e.inv.ConsoleLog(ctx, j.Machine, j.ID); err == nil {
		prev, total = l.Data, l.Captured
	}
	c := cc.captureConsole(ctx, m, prev, total)
	if c == nil {
		return
	}
	e.captures.mu.Lock()
	if e.captures.m == nil {
		e.captures.m = map[string]*consoleCapture{}
	}
	e.captures.m[j.ID] = c
	e.captures.mu.Unlock()
}

// saveConsole stores what job id's capture holds, when it changed since
// the last save. end stops the capture first.
func (e *Engine) saveConsole(ctx context.Context, id string, end bool) {
	e.captures.mu.Lock()
	c := e.captures.m[id]
	if end {
		delete(e.captures.m, id)
	}
	e.captures.mu.Unlock()
	if c == nil {
		return
	}
	if end {
		c.close()
	}
	data, total := c.r.snapshot()
	if total == c.saved {
		return
	}
	// The kernel prints its command line, which carries the job's agent
	// token: it is not kept (the log outlives the job, and tenants read it).
	data = bytes.ReplaceAll(data, []byte(e.AgentToken(id)), []byte("[agent token]"))
	l := inventory.ConsoleLog{Job: id, Data: data, Captured: total, Truncated: total > int64(len(data))}
	if err := e.inv.PutConsoleLog(context.WithoutCancel(ctx), l); err != nil {
		e.log.Warn("saving a job's console log", "job", id, "err", err)
		return
	}
	c.saved = total
}
