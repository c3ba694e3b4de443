package netboot

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DHCPServer reads packets itself and hands them to a fixed pool of
// workers through a bounded queue. server4.Server starts a goroutine per
// packet; after a power restoration thousands of machines DISCOVER at
// once, so the server must shed load (and count it) instead.
type DHCPServer struct {
	h         *DHCPHandler
	workers   int
	queue     chan inPacket
	timeout   time.Duration
	broadcast netip.Addr
	log       *slog.Logger
	bufs      sync.Pool
}

type inPacket struct {
	buf  *[maxDHCPPacket]byte
	n    int
	peer netip.AddrPort
	conn *net.UDPConn
	port uint16
}

// maxDHCPPacket bounds what is read; larger datagrams are truncated and
// then fail to parse.
const maxDHCPPacket = 1500

// DHCPServerConfig sizes a DHCPServer. Zero values take defaults.
type DHCPServerConfig struct {
	Workers   int           // default 4
	QueueSize int           // default 1024
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
	s := &DHCPServer{
		h:         h,
		workers:   cfg.Workers,
		queue:     make(chan inPacket, cfg.QueueSize),
		timeout:   cfg.Timeout,
		broadcast: cfg.Broadcast,
		log:       cfg.Logger,
	}
	s.bufs.New = func() any { return new([maxDHCPPacket]byte) }
	return s
}

// Stats returns the handler's counters (queue drops included).
func (s *DHCPServer) Stats() DHCPStats { return s.h.Stats() }

// Serve reads from conns until ctx is done, then closes them and waits
// for the workers. Serve owns conns from the call on.
func (s *DHCPServer) Serve(ctx context.Context, conns ...*net.UDPConn) error {
	if len(conns) == 0 {
		return errors.New("DHCP server: no sockets")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var readers, workers sync.WaitGroup
	errc := make(chan error, len(conns))
	for _, c := range conns {
		port := uint16(0)
		if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
			port = uint16(ua.Port)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := s.read(ctx, c, port); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	for range s.workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.work(ctx)
		}()
	}
	<-ctx.Done()
	for _, c := range conns {
		c.Close() // unblocks the readers
	}
	readers.Wait()
	workers.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (s *DHCPServer) read(ctx context.Context, c *net.UDPConn, port uint16) error {
	for {
		buf := s.bufs.Get().(*[maxDHCPPacket]byte)
		n, peer, err := c.ReadFromUDPAddrPort(buf[:])
		if err != nil {
			s.bufs.Put(buf)
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Anything else is transient as far as we can tell (e.g.
			// ENOBUFS): log, breathe, go on; one bad read must not stop
			// DHCP for a hall.
			s.log.Warn("dhcp: read failed", "port", port, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		select {
		case s.queue <- inPacket{buf: buf, n: n, peer: peer, conn: c, port: port}:
		default:
			s.h.stats.received.Add(1)
			s.h.stats.dropped[DropQueueFull].Add(1)
			s.bufs.Put(buf)
		}
	}
}

func (s *DHCPServer) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.queue:
			s.serveOne(ctx, p)
		}
	}
}

func (s *DHCPServer) serveOne(ctx context.Context, p inPacket) {
	defer s.bufs.Put(p.buf)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rep, _ := s.h.Handle(ctx, p.buf[:p.n], p.peer, p.port)
	if rep == nil {
		return
	}
	dst := rep.Dest.Addr
	if rep.Dest.Kind == DestBroadcast || rep.Dest.Kind == DestHardware {
		dst = netip.AddrPortFrom(s.broadcast, dst.Port())
	}
	if _, err := p.conn.WriteToUDPAddrPort(rep.Packet.ToBytes(), dst); err != nil {
		s.h.stats.dropped[DropSend].Add(1)
		s.log.Warn("dhcp: sending reply failed", "to", dst, "mac", rep.Packet.ClientHWAddr.String(), "err", err)
	}
}
