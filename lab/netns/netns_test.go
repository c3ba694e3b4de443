package netns

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestVethBetweenNamespaces(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip("skipping: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := New(ctx, "mhtest")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(ctx, "mhtest")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.AddBridge(ctx, "br0", netip.MustParsePrefix("10.99.250.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := a.AddTap(ctx, "tap0", "br0"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddVeth(ctx, "va", netip.MustParsePrefix("10.99.251.1/24"), b, "vb", netip.MustParsePrefix("10.99.251.2/24")); err != nil {
		t.Fatal(err)
	}
	// A UDP socket opened in b receives what a's socket sends over the veth.
	var conn *net.UDPConn
	if err := b.Run(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 251, 2), Port: 9999})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := a.Run(func() error {
		c, err := net.Dial("udp4", "10.99.251.2:9999")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hi"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 10)
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	// The host namespace has no such address.
	if _, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 251, 2)}); err == nil {
		t.Fatal("namespace address visible in the host namespace")
	}
}

func TestForwardCarriesHostConnectionsIntoTheNamespace(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip("skipping: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := New(ctx, "mhtest")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// A server on the namespace's loopback, which the host cannot reach.
	var inner net.Listener
	if err := n.Run(func() (err error) {
		inner, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	go func() {
		for {
			c, err := inner.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(append([]byte("echo "), buf...))
				}
			}()
		}
	}()
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Forward(fctx, host, inner.Addr().String()) }()
	c, err := net.Dial("tcp", host.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "echo hello" {
		t.Fatalf("through the forward: %q %v", got, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Forward after its context ended: %v", err)
	}
	if _, err := net.Dial("tcp", host.Addr().String()); err == nil {
		t.Fatal("the host listener still accepts after Forward returned")
	}
}
