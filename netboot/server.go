package netboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Config configures a Server.
type Config struct {
	// Interface the DHCP sockets are bound to (SO_BINDTODEVICE). Required
	// for broadcast replies to leave on the right segment; "" binds none
	// (tests on loopback).
	Interface string
	Mode      Mode
	// Advertise is the server's address as clients see it: option 54,
	// siaddr, option 66.
	Advertise netip.Addr
	// HTTPBaseURL is where the HTTP handler is reachable, e.g.
	// "http://10.1.0.1:8080"; iPXE fetches HTTPBaseURL/boot/{mac}.ipxe.
	HTTPBaseURL string
	Discovery   bool
	BootFiles   BootFiles
	// DHCPRelays are the relay agents (or prefixes) whose giaddr is
	// accepted besides those inside a known segment (DHCPConfig.Relays).
	DHCPRelays []netip.Prefix

	DHCPPort   uint16 // default 67
	ProxyPort  uint16 // proxy mode's boot server port, default 4011
	ClientPort uint16 // where client replies go, default 68

	// TFTPRoot is served read-only over TFTP; "" runs no TFTP.
	TFTPRoot string
	// TFTPListen is the TFTP socket; default 0.0.0.0:69.
	TFTPListen        netip.AddrPort
	TFTPMaxConcurrent int
	TFTPPerSource     int // transfers at once from one address (default 4)
	// TFTPMaxBlockSize caps blksize; default: the listening address's
	// interface MTU - 32, or 1468 when listening on 0.0.0.0 (set it for
	// jumbo frames).
	TFTPMaxBlockSize int

	Workers   int           // DHCP workers, default 4
	QueueSize int           // DHCP queue (the socket's receive buffer), in packets, default 1024
	Timeout   time.Duration // per DHCP packet, default 2s

	Booter    Booter
	Addresses Addresses
	Recorder  Recorder
	Logger    *slog.Logger
}

// Server runs DHCP and TFTP. HTTP is a handler (NewHTTPHandler) the
// service mounts on its own HTTP server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	dhcp *DHCPServer // nil in ModeOff
	tftp *TFTPServer // nil without TFTPRoot

	// Bound by Listen, handed to Serve.
	dhcpConns []*net.UDPConn
	tftpConn  *net.UDPConn
	listened  bool
	served    bool
	closeOnce sync.Once
}

// Stats are a Server's counters.
type Stats struct {
	DHCP DHCPStats
	TFTP TFTPStats
}

// NewServer checks cfg and returns a Server; Listen binds its sockets and
// Serve runs them (Run does both).
func NewServer(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DHCPPort == 0 {
		cfg.DHCPPort = 67
	}
	if cfg.ProxyPort == 0 {
		cfg.ProxyPort = proxyPort
	}
	if !cfg.TFTPListen.IsValid() {
		cfg.TFTPListen = netip.AddrPortFrom(netip.IPv4Unspecified(), 69)
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if cfg.Mode != ModeOff {
		h, err := NewDHCPHandler(DHCPConfig{
			Mode: cfg.Mode, ServerIP: cfg.Advertise, HTTPBase: cfg.HTTPBaseURL,
			Discovery: cfg.Discovery, BootFiles: cfg.BootFiles, Relays: cfg.DHCPRelays,
			ServerPort: cfg.DHCPPort, ClientPort: cfg.ClientPort,
			Booter: cfg.Booter, Addresses: cfg.Addresses, Recorder: cfg.Recorder, Logger: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
		s.dhcp = NewDHCPServer(h, DHCPServerConfig{Workers: cfg.Workers, QueueSize: cfg.QueueSize, Timeout: cfg.Timeout, Logger: cfg.Logger})
	}
	if cfg.TFTPRoot != "" {
		t, err := NewTFTPServer(TFTPConfig{Root: cfg.TFTPRoot, MaxConcurrent: cfg.TFTPMaxConcurrent, PerSource: cfg.TFTPPerSource, MaxBlockSize: cfg.TFTPMaxBlockSize, Recorder: cfg.Recorder, Addresses: cfg.Addresses, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		s.tftp = t
	}
	if s.dhcp == nil && s.tftp == nil {
		return nil, errors.New("netboot: nothing to run (DHCP mode off and no TFTP root)")
	}
	return s, nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	var st Stats
	if s.dhcp != nil {
		st.DHCP = s.dhcp.Stats()
	}
	if s.tftp != nil {
		st.TFTP = s.tftp.Stats()
	}
	return st
}

// Run opens the sockets and serves until ctx is done: Listen, then Serve.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Listen binds the DHCP and TFTP sockets and returns a bind error at once,
// so a service fails its start instead of finding out later (no sleeping
// and hoping). Call it once, before Serve; Close releases the sockets of a
// Server that never served.
func (s *Server) Listen() error {
	if s.listened {
		return errors.New("netboot: Listen called twice")
	}
	if s.dhcp != nil {
		ports := []uint16{s.cfg.DHCPPort}
		if s.cfg.Mode == ModeProxy {
			ports = append(ports, s.cfg.ProxyPort)
		}
		for _, p := range ports {
			// 0.0.0.0 plus the device: a socket bound to the server's own
			// address never sees broadcast DISCOVERs.
			c, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{IP: net.IPv4zero, Port: int(p)})
			if err != nil {
				s.closeSockets()
				return fmt.Errorf("netboot: DHCP socket on %q port %d: %w", s.cfg.Interface, p, err)
			}
			// Its receive buffer is the DHCP queue: DHCPServer.Serve sizes
			// it (QueueSize).
			s.dhcpConns = append(s.dhcpConns, c)
		}
	}
	if s.tftp != nil {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(s.cfg.TFTPListen))
		if err != nil {
			s.closeSockets()
			return fmt.Errorf("netboot: TFTP socket %s: %w", s.cfg.TFTPListen, err)
		}
		s.tftpConn = c
	}
	s.listened = true
	return nil
}

func (s *Server) closeSockets() {
	for _, c := range s.dhcpConns {
		c.Close()
	}
	s.dhcpConns = nil
	if s.tftpConn != nil {
		s.tftpConn.Close()
		s.tftpConn = nil
	}
}

// Close releases what Listen bound and the TFTP root, for a Server whose
// Serve never ran or has returned. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if !s.served {
			s.closeSockets()
		}
		if s.tftp != nil {
			s.tftp.Close()
		}
	})
	return nil
}

// Serve serves on the sockets Listen bound until ctx is done, then stops
// (call it once per Server: stopping releases the TFTP root): it closes
// the DHCP sockets, lets running TFTP transfers finish (pin/tftp Shutdown)
// and returns.
func (s *Server) Serve(ctx context.Context) error {
	if !s.listened {
		return errors.New("netboot: Serve called before Listen")
	}
	if s.served {
		return errors.New("netboot: Serve called twice")
	}
	s.served = true
	dhcpConns, tftpConn := s.dhcpConns, s.tftpConn
	s.log.Info("netboot: serving", "mode", s.cfg.Mode, "interface", s.cfg.Interface, "advertise", s.cfg.Advertise, "tftp", s.tftp != nil)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	if s.dhcp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.dhcp.Serve(ctx, dhcpConns...); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	// TFTP runs on the calling goroutine: pin/tftp serves every transfer
	// on the one socket behind the gate (single-port mode), and a caller
	// locked into a network namespace keeps its work there.
	if s.tftp != nil {
		if err := s.tftp.Serve(ctx, tftpConn); err != nil {
			errc <- err
			cancel()
		}
	} else {
		<-ctx.Done()
	}
	wg.Wait()
	s.Close()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
