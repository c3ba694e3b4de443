package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/metalhall/metalhall/lab/netns"
)

// dhcpClients is the DHCP side of every simulated machine: one UDP socket
// on port 68 of the client veth (machines share one wire, as on a real
// provisioning network), replies told apart by transaction ID. Requests
// ask for broadcast replies, as PXE ROMs do before they have an address.
type dhcpClients struct {
	conn *net.UDPConn

	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
	done    chan struct{}
}

// listenDHCP opens the shared client socket inside ns, bound to ifname.
func listenDHCP(ns *netns.Namespace, ifname string) (*dhcpClients, error) {
	var d *dhcpClients
	err := ns.Run(func() (err error) {
		d, err = listenDHCPHere(ifname)
		return err
	})
	return d, err
}

// listenDHCPHere opens a client socket on port 68 of ifname in this
// process's namespace. Several may share the port (SO_REUSEADDR): each
// gets every broadcast reply and keeps those of its own transactions.
func listenDHCPHere(ifname string) (*dhcpClients, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); serr != nil {
				return
			}
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); serr != nil {
				return
			}
			serr = syscall.BindToDevice(int(fd), ifname)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
	if err != nil {
		return nil, fmt.Errorf("dhcp client socket on %s: %w", ifname, err)
	}
	conn := pc.(*net.UDPConn)
	// 1,000 machines answered at once: a deep receive queue, so the
	// bench's reader is not what drops replies.
	if err := conn.SetReadBuffer(8 << 20); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dhcp client socket on %s: %w", ifname, err)
	}
	d := &dhcpClients{conn: conn, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}, done: make(chan struct{})}
	go d.read()
	return d, nil
}

func (d *dhcpClients) Close() error {
	err := d.conn.Close()
	<-d.done
	return err
}

func (d *dhcpClients) read() {
	defer close(d.done)
	buf := make([]byte, 4096)
	for {
		n, _, err := d.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || p.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		d.mu.Lock()
		ch := d.waiting[p.TransactionID]
		d.mu.Unlock()
		if ch != nil {
			select {
			case ch <- p:
			default: // a duplicate reply; the first one counts
			}
		}
	}
}

var debug = os.Getenv("STORM_DEBUG") != ""

// dhcpKind is who is asking: the firmware's iPXE, the agent, or the
// installed OS. Each sends what the real one sends, which decides what
// netboot answers.
type dhcpKind int

const (
	kindIPXE dhcpKind = iota
	kindAgent
	kindOS
)

// exchange is one DHCP round trip's latency.
type dhcpResult struct {
	Lease      netip.Addr
	BootFile   string
	DORA       time.Duration   // DISCOVER sent → ACK received, retries included
	Exchanges  []time.Duration // each answered DISCOVER→OFFER and REQUEST→ACK
	Retransmit int
}

// dora runs DISCOVER, OFFER, REQUEST, ACK for mac, retransmitting after
// 1, 2, 4 and 8 s as PXE firmware does (RFC 2131's backoff).
func (d *dhcpClients) dora(ctx context.Context, mac net.HardwareAddr, kind dhcpKind) (dhcpResult, error) {
	var res dhcpResult
	var xb [4]byte
	rand.Read(xb[:])
	var xid dhcpv4.TransactionID
	binary.BigEndian.PutUint32(xid[:], binary.BigEndian.Uint32(xb[:]))
	ch := make(chan *dhcpv4.DHCPv4, 4)
	d.mu.Lock()
	d.waiting[xid] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.waiting, xid)
		d.mu.Unlock()
	}()
	mods := []dhcpv4.Modifier{dhcpv4.WithTransactionID(xid), dhcpv4.WithBroadcast(true)}
	switch kind {
	case kindIPXE:
		// What QEMU's iPXE NIC ROM sends under SeaBIOS.
		mods = append(mods,
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
			dhcpv4.WithUserClass("iPXE", false))
	case kindAgent, kindOS:
		// An OS DHCP client: no PXE vendor class, so no boot options.
	}
	start := time.Now()
	disc, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		return res, err
	}
	offer, err := d.roundTrip(ctx, disc, ch, dhcpv4.MessageTypeOffer, &res)
	if err != nil {
		return res, fmt.Errorf("DISCOVER: %w", err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return res, err
	}
	ack, err := d.roundTrip(ctx, req, ch, dhcpv4.MessageTypeAck, &res)
	if err != nil {
		return res, fmt.Errorf("REQUEST: %w", err)
	}
	res.DORA = time.Since(start)
	lease, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || lease.IsUnspecified() {
		return res, fmt.Errorf("ACK without an address")
	}
	res.Lease = lease
	res.BootFile = ack.BootFileNameOption()
	if res.BootFile == "" {
		res.BootFile = ack.BootFileName
	}
	return res, nil
}

func (d *dhcpClients) roundTrip(ctx context.Context, p *dhcpv4.DHCPv4, ch chan *dhcpv4.DHCPv4, want dhcpv4.MessageType, res *dhcpResult) (*dhcpv4.DHCPv4, error) {
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	wait := time.Second
	for try := 0; try < 5; try++ {
		if try > 0 {
			res.Retransmit++
			if debug {
				fmt.Fprintf(os.Stderr, "storm: dhcp retransmit %s %s xid %s try %d\n", p.ClientHWAddr, p.MessageType(), p.TransactionID, try)
			}
		}
		sent := time.Now()
		if _, err := d.conn.WriteToUDP(p.ToBytes(), dst); err != nil {
			return nil, err
		}
		t := time.NewTimer(wait)
	recv:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
				break recv
			case r := <-ch:
				switch r.MessageType() {
				case want:
					t.Stop()
					res.Exchanges = append(res.Exchanges, time.Since(sent))
					return r, nil
				case dhcpv4.MessageTypeNak:
					t.Stop()
					return nil, fmt.Errorf("NAK: %s", r.Message())
				}
			}
		}
		wait = min(2*wait, 8*time.Second)
	}
	return nil, fmt.Errorf("no %s after 5 tries", want)
}
