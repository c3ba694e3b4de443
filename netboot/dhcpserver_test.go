package netboot

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// loopbackServer runs a DHCPServer on 127.0.0.1 with a client socket that
// plays the relay: replies to giaddr go to the relay's port.
type loopbackServer struct {
	srv    *DHCPServer
	h      *DHCPHandler
	server *net.UDPConn
	client *net.UDPConn
	done   chan error
	cancel context.CancelFunc
}

func startLoopback(t *testing.T, booter Booter, addrs *MemoryAddresses, cfg DHCPServerConfig) *loopbackServer {
	t.Helper()
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	server, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cport := uint16(client.LocalAddr().(*net.UDPAddr).Port)
	// The client socket plays the relay agent at 127.0.0.1.
	h, err := NewDHCPHandler(DHCPConfig{Mode: ModeReservation, ServerIP: netip.MustParseAddr("127.0.0.1"), HTTPBase: "http://127.0.0.1:1",
		ServerPort: cport, ClientPort: cport, Booter: booter, Addresses: addrs, Relays: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &loopbackServer{srv: NewDHCPServer(h, cfg), h: h, server: server, client: client, done: make(chan error, 1), cancel: cancel}
	go func() { l.done <- l.srv.Serve(ctx, server) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-l.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not stop")
		}
		client.Close()
	})
	return l
}

func loopbackAddrs(t *testing.T, macs ...net.HardwareAddr) *MemoryAddresses {
	a := NewMemoryAddresses()
	lo := netip.MustParseAddr("127.0.0.1")
	if err := a.AddSegment(Subnet{Prefix: netip.MustParsePrefix("10.97.0.0/16")}, lo, netip.Addr{}, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	for i, m := range macs {
		if err := a.Reserve(m, netip.AddrFrom4([4]byte{10, 97, byte(i >> 8), byte(i)}), ""); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func relayedDiscover(t testing.TB, mac net.HardwareAddr) []byte {
	return pkt{mt: dhcpv4.MessageTypeDiscover, mac: mac, arch: archp(iana.INTEL_X86PC), vendor: "PXEClient", giaddr: "127.0.0.1"}.build(t)
}

func (l *loopbackServer) send(t testing.TB, b []byte) {
	t.Helper()
	if err := l.trySend(b); err != nil {
		t.Fatal(err)
	}
}

// trySend and tryRecv are for goroutines other than the test's own,
// where t.Fatal would end only that goroutine and can leave the test
// waiting for it forever: they return errors for the test to report.
func (l *loopbackServer) trySend(b []byte) error {
	_, err := l.client.WriteToUDP(b, l.server.LocalAddr().(*net.UDPAddr))
	return err
}

func (l *loopbackServer) recv(t testing.TB, timeout time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := l.tryRecv(timeout)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// tryRecv returns the next reply, nil when none came within timeout, or
// an error when one came that does not parse.
func (l *loopbackServer) tryRecv(timeout time.Duration) (*dhcpv4.DHCPv4, error) {
	buf := make([]byte, 1500)
	l.client.SetReadDeadline(time.Now().Add(timeout))
	n, _, err := l.client.ReadFromUDP(buf)
	if err != nil {
		return nil, nil
	}
	d, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("reply does not parse: %w", err)
	}
	return d, nil
}

func TestDHCPServerLoopback(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	b := NewMemoryBooter()
	b.Set(mac, Boot{Kind: BootProvision, Kernel: "http://127.0.0.1:1/k"})
	l := startLoopback(t, b, loopbackAddrs(t, mac), DHCPServerConfig{})
	l.send(t, relayedDiscover(t, mac))
	r := l.recv(t, 5*time.Second)
	if r == nil {
		t.Fatal("no reply over loopback")
	}
	if r.MessageType() != dhcpv4.MessageTypeOffer || !r.YourIPAddr.Equal(net.ParseIP("10.97.0.0")) || r.BootFileNameOption() != "undionly.kpxe" {
		t.Fatalf("offer: %s", r.Summary())
	}
	// A renewal from ciaddr 127.0.0.1... is not in the segment's prefix:
	// still unicast to ciaddr. Use a relayed REQUEST instead for the ACK.
	req := pkt{mt: dhcpv4.MessageTypeRequest, mac: mac, giaddr: "127.0.0.1", requested: "10.97.0.0", serverID: "127.0.0.1"}.build(t)
	l.send(t, req)
	if r := l.recv(t, 5*time.Second); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("ack: %v", r)
	}
	// Garbage gets nothing and is counted.
	l.send(t, []byte("hello"))
	if r := l.recv(t, 300*time.Millisecond); r != nil {
		t.Fatalf("reply to garbage: %v", r)
	}
	st := l.srv.Stats()
	if st.Received != 3 || st.Replied != 2 || st.Dropped["malformed"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

// gateBooter blocks every call until the gate opens.
type gateBooter struct {
	gate    chan struct{}
	started chan struct{}
	once    sync.Once
}

func (g *gateBooter) Boot(ctx context.Context, c Client) (Boot, error) {
	g.once.Do(func() { close(g.started) })
	select {
	case <-g.gate:
	case <-ctx.Done():
		return Boot{}, ctx.Err()
	}
	return Boot{Kind: BootProvision, Kernel: "http://127.0.0.1:1/k"}, nil
}

// The queue is the socket's receive buffer: what the kernel drops when it
// is full is counted as queue_full (SO_RXQ_OVFL), and every packet sent
// is accounted for, answered or dropped.
func TestDHCPServerCountsWhatTheFullQueueDrops(t *testing.T) {
	const n, markers = 400, 5
	var macs []net.HardwareAddr
	for i := range n + markers { // the markers are sent once the rest are in
		macs = append(macs, net.HardwareAddr{2, 0, 0, 1, byte(i >> 8), byte(i)})
	}
	discovers := make([][]byte, len(macs))
	for i, m := range macs {
		discovers[i] = relayedDiscover(t, m)
	}
	isMarker := func(r *dhcpv4.DHCPv4) bool {
		for _, m := range macs[n:] {
			if r.ClientHWAddr.String() == m.String() {
				return true
			}
		}
		return false
	}
	g := &gateBooter{gate: make(chan struct{}), started: make(chan struct{})}
	l := startLoopback(t, g, loopbackAddrs(t, macs...), DHCPServerConfig{Workers: 1, QueueSize: 1, Timeout: 30 * time.Second})
	l.client.SetReadBuffer(4 << 20) // room for every reply
	l.send(t, discovers[0])
	select { // the only worker is now stuck on the first packet
	case <-g.started:
	case <-time.After(30 * time.Second):
		t.Fatalf("the booter was never called; stats %+v", l.srv.Stats())
	}
	// A buffer of a few packets: most of these overflow it.
	for _, d := range discovers[1:n] {
		l.send(t, d)
	}
	close(g.gate)
	// The kernel gives a socket's drop count with the packets queued after
	// the drops: a marker, sent once the queue has drained, carries it. A
	// marker that still found the queue full is dropped and counted too;
	// the next one is sent.
	sent, replies := n, 0
	for k := 0; ; k++ {
		for r := l.recv(t, time.Second); r != nil; r = l.recv(t, time.Second) {
			replies++
		}
		if k == markers {
			t.Fatalf("no marker was answered; %d replies, stats %+v", replies, l.srv.Stats())
		}
		l.send(t, discovers[n+k])
		sent++
		if r := l.recv(t, 30*time.Second); r != nil {
			replies++
			if isMarker(r) {
				break
			}
		}
	}
	// Every packet sent is accounted for once the worker has read the
	// last of them.
	deadline := time.Now().Add(30 * time.Second)
	for l.srv.Stats().Received < uint64(sent) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for uint64(replies) < l.srv.Stats().Replied {
		if l.recv(t, 30*time.Second) == nil {
			break
		}
		replies++
	}
	st := l.srv.Stats()
	dropped := st.Dropped["queue_full"]
	if dropped == 0 || dropped >= n-1 {
		t.Fatalf("queue_full = %d of %d sent, want some but not all (a buffer of a few packets); stats %+v", dropped, sent, st)
	}
	if st.Received != uint64(sent) || st.Replied != uint64(sent)-dropped || uint64(replies) != st.Replied {
		t.Fatalf("sent %d, got %d replies; stats %+v: every packet is answered or counted dropped", sent, replies, st)
	}
}

func TestDHCPServerConcurrent(t *testing.T) {
	const clients, per = 8, 50
	var macs []net.HardwareAddr
	for i := range clients * per {
		macs = append(macs, net.HardwareAddr{2, 0, 0, 2, byte(i >> 8), byte(i)})
	}
	b := NewMemoryBooter()
	b.SetDiscovery(&Boot{Kind: BootDiscovery, Kernel: "http://127.0.0.1:1/k"})
	l := startLoopback(t, b, loopbackAddrs(t, macs...), DHCPServerConfig{Workers: 4, QueueSize: 4096})
	l.client.SetReadBuffer(4 << 20)
	// A window of packets in flight keeps the socket buffers (capped by
	// net.core.rmem_max) from overflowing: this test is about races, not load.
	window := make(chan struct{}, 32)
	got := make(chan int, 1)
	// Packets are built here: pkt.build may call t.Fatal, which only
	// works on the test's goroutine.
	discovers := make([][]byte, len(macs))
	for i, m := range macs {
		discovers[i] = relayedDiscover(t, m)
	}
	go func() {
		n := 0
		defer func() { got <- n }() // whatever happens, the test gets a count
		for n < clients*per {
			r, err := l.tryRecv(3 * time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			if r == nil {
				return
			}
			n++
			<-window
		}
	}()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				select {
				case window <- struct{}{}:
				case <-time.After(time.Second):
				}
				if err := l.trySend(discovers[c*per+i]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := <-got
	st := l.srv.Stats()
	// UDP on loopback can drop under load; whatever was not answered must
	// be accounted for.
	dropped := uint64(0)
	for _, v := range st.Dropped {
		dropped += v
	}
	if st.Replied < uint64(n) || st.Replied+dropped != st.Received {
		t.Errorf("got %d replies, stats %+v", n, st)
	}
	if n < clients*per*95/100 {
		t.Errorf("only %d of %d replies; stats %+v", n, clients*per, st)
	}
}
