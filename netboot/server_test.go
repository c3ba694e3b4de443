package netboot

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tftpOnlyServer(t *testing.T, listen netip.AddrPort) *Server {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "undionly.kpxe"), []byte("ipxe"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(Config{Mode: ModeOff, TFTPRoot: root, TFTPListen: listen})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestListenReturnsABindErrorAtOnce(t *testing.T) {
	held, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s := tftpOnlyServer(t, held.LocalAddr().(*net.UDPAddr).AddrPort())
	defer s.Close()
	err = s.Listen()
	if err == nil || !strings.Contains(err.Error(), "TFTP socket") {
		t.Fatalf("Listen on a port in use: %v", err)
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Fatal("Serve after a failed Listen did not refuse")
	}
}

func TestCloseWithoutServeReleasesTheSockets(t *testing.T) {
	s := tftpOnlyServer(t, netip.MustParseAddrPort("127.0.0.1:0"))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.tftpConn.LocalAddr().(*net.UDPAddr)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := net.ListenUDP("udp4", addr)
	if err != nil {
		t.Fatalf("the port is still held after Close: %v", err)
	}
	again.Close()
	s.Close() // twice is fine
}

func TestServeStopsWhenTheContextEnds(t *testing.T) {
	s := tftpOnlyServer(t, netip.MustParseAddrPort("127.0.0.1:0"))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	s.Close()
}
