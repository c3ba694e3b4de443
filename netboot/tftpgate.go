package netboot

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TFTP opcodes (RFC 1350, RFC 2347).
const (
	tftpRRQ   = 1
	tftpWRQ   = 2
	tftpACK   = 4
	tftpERROR = 5
)

// tftpGate is the net.PacketConn pin/tftp serves on, in its single-port
// mode: every packet of every transfer passes through it, which is what
// lets the server bound transfers per source, notice a transfer whose
// client never answered, and end one from outside. pin/tftp has no
// per-transfer limits or cancellation of its own: a read request is one
// spoofable packet, and each used to hold a transfer slot for the whole
// retry cycle (~15 s at the defaults), so 64 of them denied TFTP to every
// machine.
//
// The rules:
//   - a transfer is unanswered until its client sends the first ACK; one
//     still unanswered after firstACK is ended;
//   - at most perSource transfers per source address and max in all; when
//     either is full, the oldest unanswered transfer in its scope (then
//     one whose client has not ACKed for a whole retransmit timeout) is
//     ended to make room, and only when none is, the request is refused
//     as busy: spoofed requests cannot keep out a machine that answers;
//   - packets that belong to no transfer (late ACKs, DATA, OACK) never
//     reach pin/tftp, and write requests are refused here.
//
// A transfer is ended by handing pin/tftp an ERROR packet "from" its
// client, which makes the transfer's sender stop and close at once.
//
// ReadFrom runs on pin/tftp's single loop goroutine; done runs on the
// transfers' goroutines. mu guards the transfer table.
type tftpGate struct {
	conn      *net.UDPConn
	max       int
	perSource int
	firstACK  time.Duration
	stall     time.Duration // an answered transfer silent this long may make room
	stats     *tftpCounters
	stopping  atomic.Bool // Serve is shutting down

	mu       sync.Mutex
	xfers    map[netip.AddrPort]*tftpXfer // every transfer pin/tftp runs, ending ones included
	live     int                          // transfers not being ended
	bySource map[netip.Addr]int           // live transfers per source address
	waiting  []*tftpXfer                  // unanswered transfers, oldest first (answered and ended ones are skipped lazily)
	ending   []*tftpXfer                  // transfers being ended, by when to prod them again
	pending  []gatePacket                 // what ReadFrom hands pin/tftp before reading the socket
	userDL   time.Time                    // the read deadline pin/tftp asked for
	setDL    time.Time                    // the deadline set on conn now
	dlDirty  bool
}

type tftpXfer struct {
	peer     netip.AddrPort
	addr     *net.UDPAddr // peer, as pin/tftp wants it: made once, not per packet
	start    time.Time
	lastACK  time.Time // zero until the first ACK
	ending   bool
	endedAt  time.Time
	nextProd time.Time
	done     bool
}

type gatePacket struct {
	b    []byte
	from *net.UDPAddr
}

// endProdEvery is how often an ending transfer is sent its ERROR again
// (pin/tftp drops a packet for a transfer whose one-slot queue is full).
const endProdEvery = 250 * time.Millisecond

var endPacket = tftpError(0, "transfer ended by the server")

func tftpError(code uint16, msg string) []byte {
	b := binary.BigEndian.AppendUint16(nil, tftpERROR)
	b = binary.BigEndian.AppendUint16(b, code)
	return append(append(b, msg...), 0)
}

var busyPacket = tftpError(0, errTFTPBusy.Error())
var writePacket = tftpError(2, "read-only server")

func newTFTPGate(conn *net.UDPConn, max, perSource int, firstACK, stall time.Duration, stats *tftpCounters) *tftpGate {
	return &tftpGate{
		conn: conn, max: max, perSource: perSource, firstACK: firstACK, stall: stall, stats: stats,
		xfers: make(map[netip.AddrPort]*tftpXfer), bySource: make(map[netip.Addr]int),
	}
}

// ReadFrom returns the next packet pin/tftp should see.
func (g *tftpGate) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		g.mu.Lock()
		now := time.Now()
		g.expire(now)
		if len(g.xfers) == 0 && g.stopping.Load() {
			// pin/tftp's shutdown waits for a packet (up to a second) before
			// it checks for transfers; there are none.
			g.mu.Unlock()
			return 0, nil, os.ErrDeadlineExceeded
		}
		if len(g.pending) > 0 {
			pk := g.pending[0]
			g.pending = g.pending[1:]
			g.mu.Unlock()
			return copy(p, pk.b), pk.from, nil
		}
		dl := g.wakeAt()
		if dl != g.setDL || g.dlDirty {
			g.setDL, g.dlDirty = dl, false
			g.conn.SetReadDeadline(dl)
		}
		g.mu.Unlock()

		n, from, err := g.conn.ReadFromUDPAddrPort(p)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				g.mu.Lock()
				ud := g.userDL
				g.mu.Unlock()
				if ud.IsZero() || time.Now().Before(ud) {
					continue // our own wake-up: an unanswered transfer is due
				}
			}
			return 0, nil, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if addr := g.pass(p[:n], from, time.Now()); addr != nil {
			return n, addr, nil
		}
	}
}

// wakeAt is when ReadFrom must stop waiting for the socket: pin/tftp's own
// deadline, the first-ACK deadline of the oldest unanswered transfer, or
// the next prod of an ending one. Called with mu held, after expire.
func (g *tftpGate) wakeAt() time.Time {
	dl := g.userDL
	earlier := func(t time.Time) {
		if dl.IsZero() || t.Before(dl) {
			dl = t
		}
	}
	if len(g.waiting) > 0 {
		earlier(g.waiting[0].start.Add(g.firstACK))
	}
	if len(g.ending) > 0 {
		earlier(g.ending[0].nextProd)
	}
	return dl
}

// expire ends the transfers whose first ACK is overdue and prods ending
// transfers that have not stopped yet. Called with mu held.
func (g *tftpGate) expire(now time.Time) {
	for len(g.waiting) > 0 {
		x := g.waiting[0]
		if x.done || x.ending || !x.lastACK.IsZero() {
			g.waiting = g.waiting[1:]
			continue
		}
		if now.Sub(x.start) < g.firstACK {
			break
		}
		g.waiting = g.waiting[1:]
		g.stats.expired.Add(1)
		g.end(x, now)
	}
	for len(g.ending) > 0 {
		x := g.ending[0]
		if x.done {
			g.ending = g.ending[1:]
			continue
		}
		if now.Before(x.nextProd) {
			break
		}
		g.ending = g.ending[1:]
		// A transfer pin/tftp never started (it refused the request)
		// will never call done: forget it after what would have been its
		// whole retry cycle.
		if now.Sub(x.endedAt) > 30*endProdEvery+g.stall*6 {
			if g.xfers[x.peer] == x {
				delete(g.xfers, x.peer)
			}
			continue
		}
		x.nextProd = now.Add(endProdEvery)
		g.ending = append(g.ending, x)
		g.pending = append(g.pending, gatePacket{b: endPacket, from: x.addr})
	}
}

// end stops counting x against the limits and queues the ERROR that
// makes pin/tftp stop it. Called with mu held.
func (g *tftpGate) end(x *tftpXfer, now time.Time) {
	x.ending, x.endedAt, x.nextProd = true, now, now.Add(endProdEvery)
	g.live--
	g.release(x.peer.Addr())
	g.ending = append(g.ending, x)
	g.pending = append(g.pending, gatePacket{b: endPacket, from: x.addr})
}

func (g *tftpGate) release(a netip.Addr) {
	if g.bySource[a]--; g.bySource[a] <= 0 {
		delete(g.bySource, a)
	}
}

// pass decides whether pin/tftp sees a packet that arrived at now: it
// returns the address to hand pin/tftp with it, or nil to drop it. The
// address is the transfer's own, made when it was admitted: pin/tftp
// reads every packet of every transfer through here, and a new one per
// packet was an allocation per packet. Called without mu.
func (g *tftpGate) pass(b []byte, from netip.AddrPort, now time.Time) *net.UDPAddr {
	if len(b) < 4 {
		return nil
	}
	op := binary.BigEndian.Uint16(b)
	g.mu.Lock()
	defer g.mu.Unlock()
	x := g.xfers[from]
	switch op {
	case tftpACK:
		if x == nil || x.ending {
			return nil
		}
		x.lastACK = now
		return x.addr
	case tftpERROR:
		if x == nil || x.ending {
			return nil
		}
		return x.addr
	case tftpRRQ:
		if x != nil {
			return nil // a retransmitted request: the transfer answers it
		}
		// pin/tftp refuses a request without a NUL after the filename; it
		// would then start no transfer and never call done.
		if !hasNUL(b[2:]) {
			return nil
		}
		return g.admit(from, now)
	case tftpWRQ:
		g.stats.denied.Add(1)
		g.conn.WriteToUDPAddrPort(writePacket, from)
	}
	return nil
}

func hasNUL(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return true
		}
	}
	return false
}

// admit makes room for a new transfer from peer and returns its
// address, or refuses it as busy and returns nil. Called with mu held.
func (g *tftpGate) admit(peer netip.AddrPort, now time.Time) *net.UDPAddr {
	src := peer.Addr()
	// Transfers being ended still hold a goroutine until pin/tftp stops
	// them: bound them too.
	ok := len(g.xfers) < 2*g.max
	if ok && g.bySource[src] >= g.perSource {
		ok = g.makeRoom(now, func(x *tftpXfer) bool { return x.peer.Addr() == src })
	}
	if ok && g.live >= g.max {
		ok = g.makeRoom(now, func(*tftpXfer) bool { return true })
	}
	if !ok {
		g.stats.busy.Add(1)
		g.conn.WriteToUDPAddrPort(busyPacket, peer)
		return nil
	}
	x := &tftpXfer{peer: peer, addr: net.UDPAddrFromAddrPort(peer), start: now}
	g.xfers[peer] = x
	g.live++
	g.bySource[src]++
	g.waiting = append(g.waiting, x)
	return x.addr
}

// makeRoom ends the oldest unanswered transfer in scope, or else the one
// whose client has been silent longest if that is a whole retransmit
// timeout. It reports whether it ended one. Called with mu held.
func (g *tftpGate) makeRoom(now time.Time, inScope func(*tftpXfer) bool) bool {
	var unanswered, stalled *tftpXfer
	for _, x := range g.xfers {
		if x.ending || !inScope(x) {
			continue
		}
		switch {
		case x.lastACK.IsZero():
			if unanswered == nil || x.start.Before(unanswered.start) {
				unanswered = x
			}
		case now.Sub(x.lastACK) >= g.stall:
			if stalled == nil || x.lastACK.Before(stalled.lastACK) {
				stalled = x
			}
		}
	}
	victim := unanswered
	if victim == nil {
		victim = stalled
	}
	if victim == nil {
		return false
	}
	g.stats.shed.Add(1)
	g.end(victim, now)
	return true
}

// done is called when the transfer with peer has ended, whoever ended it.
func (g *tftpGate) done(peer netip.AddrPort) {
	g.mu.Lock()
	defer g.mu.Unlock()
	x := g.xfers[peer]
	if x == nil {
		return
	}
	delete(g.xfers, peer)
	x.done = true
	if !x.ending {
		g.live--
		g.release(peer.Addr())
	}
	if len(g.xfers) == 0 && g.stopping.Load() {
		// Wake ReadFrom: the last transfer is over, pin/tftp can stop.
		g.dlDirty = true
		g.conn.SetReadDeadline(time.Now())
	}
}

// WriteTo sends a transfer's packet. pin/tftp calls it holding the lock
// its loop takes for every incoming packet: one sendto, nothing more.
// (A queue drained with sendmmsg by a writer goroutine was tried: it
// saved no CPU in bench/dhcp/run_tftp.sh, the queue rarely held more
// than one packet.)
func (g *tftpGate) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, errors.New("TFTP: not a UDP address")
	}
	return g.conn.WriteToUDP(b, ua)
}

// SetReadDeadline is pin/tftp's shutdown signal: it wakes a blocked
// ReadFrom at once.
func (g *tftpGate) SetReadDeadline(t time.Time) error {
	g.mu.Lock()
	g.userDL, g.dlDirty = t, true
	g.mu.Unlock()
	return g.conn.SetReadDeadline(t)
}

func (g *tftpGate) SetDeadline(t time.Time) error      { return g.SetReadDeadline(t) }
func (g *tftpGate) SetWriteDeadline(t time.Time) error { return g.conn.SetWriteDeadline(t) }
func (g *tftpGate) Close() error                       { return g.conn.Close() }
func (g *tftpGate) LocalAddr() net.Addr                { return g.conn.LocalAddr() }

// mtuOf is the MTU of the interface that holds a, or 0 when a is
// unspecified or not found.
func mtuOf(a netip.Addr) int {
	if !a.IsValid() || a.IsUnspecified() {
		return 0
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return 0
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if pn, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(pn.IP); ok && ip.Unmap() == a.Unmap() {
					return ifc.MTU
				}
			}
		}
	}
	return 0
}

var _ net.PacketConn = (*tftpGate)(nil)
