package netboot

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DHCPServer answers DHCP packets with a fixed pool of workers. Each
// worker reads a packet from the socket itself and answers it: no packet
// waits for a hand-off between goroutines. server4.Server starts a
// goroutine per packet; after a power restoration thousands of machines
// DISCOVER at once, so the server must shed load (and count it) instead.
//
// Why no reader goroutine feeding the workers through a channel (as
// before): during a boot storm the service's two Ps run hundreds of HTTP
// and job goroutines, and Go schedules runnable goroutines first in, first
// out. A packet then waited twice for a P — once for the reader, once for
// the worker it was handed to — each wait up to ~10 ms in an execution
// trace of the storm (bench/storm). Reading in the worker removes the
// second wait. The workers take turns on the socket (the runtime lets one
// read at a time and wakes the next as the previous one's read returns),
// so a burst is answered in order by whichever worker is free.
//
// The queue is the socket's receive buffer, sized for QueueSize packets;
// what the kernel drops when it is full is counted as queue_full, from
// the socket's drop counter (SO_RXQ_OVFL) that comes with the next packet
// read.
type DHCPServer struct {
	h         *DHCPHandler
	workers   int
	queueSize int
	timeout   time.Duration
	broadcast netip.Addr
	log       *slog.Logger
}

// maxDHCPPacket bounds what is read; larger datagrams are truncated and
// then fail to parse.
const maxDHCPPacket = 1500

// queueBytesPerPacket is what the receive buffer is sized at per queued
// packet: the kernel charges a datagram its buffer's true size (a
// full-size Ethernet frame's is about 2.3 KiB), not its length.
const queueBytesPerPacket = 4 << 10

// DHCPServerConfig sizes a DHCPServer. Zero values take defaults.
type DHCPServerConfig struct {
	Workers int // per socket, default 4
	// QueueSize is how many packets wait in the socket's receive buffer
	// for a worker (default 1024: a 4 MiB buffer; the kernel caps it at
	// net.core.rmem_max, so raise that on the service host).
	QueueSize int
	Timeout   time.Duration // per packet, for the Booter and Addresses (default 2s)
	// Broadcast is where broadcast replies go (default 255.255.255.255;
	// tests on loopback override it).
	Broadcast netip.Addr
	Logger    *slog.Logger
}

// NewDHCPServer returns a server feeding h.
func NewDHCPServer(h *DHCPHandler, cfg DHCPServerConfig) *DHCPServer {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if !cfg.Broadcast.IsValid() {
		cfg.Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &DHCPServer{
		h:         h,
		workers:   cfg.Workers,
		queueSize: cfg.QueueSize,
		timeout:   cfg.Timeout,
		broadcast: cfg.Broadcast,
		log:       cfg.Logger,
	}
}

// Stats returns the handler's counters (queue drops included).
func (s *DHCPServer) Stats() DHCPStats { return s.h.Stats() }

// Serve answers on conns until ctx is done, then closes them and waits
// for the workers. Serve owns conns from the call on.
func (s *DHCPServer) Serve(ctx context.Context, conns ...*net.UDPConn) error {
	if len(conns) == 0 {
		return errors.New("DHCP server: no sockets")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var workers sync.WaitGroup
	errc := make(chan error, len(conns)*s.workers)
	for _, c := range conns {
		port := uint16(0)
		if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
			port = uint16(ua.Port)
		}
		// Best effort: a buffer capped by rmem_max still works, and a
		// socket without the drop counter still serves (its drops go
		// uncounted, as they did before SO_RXQ_OVFL).
		_ = c.SetReadBuffer(s.queueSize * queueBytesPerPacket)
		sock := &dhcpSocket{conn: c, port: port}
		if rc, err := c.SyscallConn(); err == nil {
			sock.raw = rc
		}
		if err := sock.countDrops(); err != nil {
			s.log.Warn("dhcp: the kernel's drops on this socket will not be counted", "port", port, "err", err)
		}
		for range s.workers {
			workers.Add(1)
			go func() {
				defer workers.Done()
				if err := s.work(ctx, sock); err != nil {
					errc <- err
					cancel()
				}
			}()
		}
	}
	<-ctx.Done()
	for _, c := range conns {
		c.Close() // unblocks the workers' reads
	}
	workers.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// dhcpSocket is one socket the workers share, with the kernel's drop
// count last accounted for.
type dhcpSocket struct {
	conn  *net.UDPConn
	raw   syscall.RawConn // nil: send through conn
	port  uint16
	drops atomic.Uint32 // the socket's drop counter as last seen
}

// send writes one reply. It calls sendto(2) itself, not through
// conn.WriteTo, which holds the socket's write lock across the system
// call: a worker whose sendto is preempted then waits for a CPU with the
// lock held, and every other worker with a reply waits behind it (up to
// ~7 ms in a boot storm's trace). The kernel needs no such lock for a
// datagram. Should the socket's send buffer be full (EAGAIN), conn's
// write waits for room as it always did.
func (d *dhcpSocket) send(b []byte, dst netip.AddrPort) error {
	if d.raw == nil || !dst.Addr().Unmap().Is4() {
		_, err := d.conn.WriteToUDPAddrPort(b, dst)
		return err
	}
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().Unmap().As4()}
	var serr error
	if err := d.raw.Control(func(fd uintptr) {
		for {
			if serr = unix.Sendto(int(fd), b, 0, sa); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err // closed
	}
	if serr == unix.EAGAIN {
		_, err := d.conn.WriteToUDPAddrPort(b, dst)
		return err
	}
	if serr != nil {
		return &net.OpError{Op: "write", Net: "udp", Source: d.conn.LocalAddr(), Addr: net.UDPAddrFromAddrPort(dst), Err: os.NewSyscallError("sendto", serr)}
	}
	return nil
}

// countDrops asks the kernel to attach the socket's drop counter to every
// packet read (SO_RXQ_OVFL).
func (d *dhcpSocket) countDrops() error {
	if d.raw == nil {
		return errors.New("no raw access to the socket")
	}
	var serr error
	if err := d.raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	}); err != nil {
		return err
	}
	return serr
}

// dropped returns how many packets the kernel dropped on the socket since
// the last call that saw a newer counter, from a read's control message.
// Workers read concurrently: each new count is accounted for once.
func (d *dhcpSocket) dropped(oob []byte) uint32 {
	now, ok := rxqOverflow(oob)
	if !ok {
		return 0
	}
	for {
		last := d.drops.Load()
		n := now - last // wraps as the kernel's counter does
		if n == 0 || n > 1<<31 {
			return 0 // not newer than what another worker accounted for
		}
		if d.drops.CompareAndSwap(last, now) {
			return n
		}
	}
}

// rxqOverflow finds the SO_RXQ_OVFL counter in a read's control
// messages.
func rxqOverflow(oob []byte) (uint32, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && l >= unix.CmsgLen(4) {
			return binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]), true
		}
		oob = oob[min(unix.CmsgSpace(l-unix.SizeofCmsghdr), len(oob)):]
	}
	return 0, false
}

// work reads packets from sock and answers them until the socket is
// closed.
func (s *DHCPServer) work(ctx context.Context, sock *dhcpSocket) error {
	var buf [maxDHCPPacket]byte
	var oob [64]byte
	// The worker's reply buffer, reused for every reply it sends (a reply
	// that does not fit grows a copy for itself).
	out := make([]byte, 0, maxDHCPPacket)
	for {
		n, oobn, _, peer, err := sock.conn.ReadMsgUDPAddrPort(buf[:], oob[:])
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Anything else is transient as far as we can tell (e.g.
			// ENOBUFS): log, breathe, go on; one bad read must not stop
			// DHCP for a hall.
			s.log.Warn("dhcp: read failed", "port", sock.port, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if d := sock.dropped(oob[:oobn]); d > 0 {
			s.h.stats.received.Add(uint64(d))
			s.h.stats.dropped[DropQueueFull].Add(uint64(d))
		}
		s.serveOne(ctx, sock, buf[:n], peer, out)
	}
}

// serveOne answers pkt, serialising the reply into out's storage.
func (s *DHCPServer) serveOne(ctx context.Context, sock *dhcpSocket, pkt []byte, peer netip.AddrPort, out []byte) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rep, _ := s.h.Handle(ctx, pkt, peer, sock.port)
	if rep == nil {
		return
	}
	dst := rep.Dest.Addr
	if rep.Dest.Kind == DestBroadcast || rep.Dest.Kind == DestHardware {
		dst = netip.AddrPortFrom(s.broadcast, dst.Port())
	}
	if err := sock.send(appendPacket(out[:0], rep.Packet), dst); err != nil {
		s.h.stats.dropped[DropSend].Add(1)
		s.log.Warn("dhcp: sending reply failed", "to", dst, "mac", rep.Packet.ClientHWAddr.String(), "err", err)
	}
	s.h.recycle(rep)
}
