package netboot

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// rrq is a TFTP read request for name with the options iPXE sends.
func rrq(name string) []byte {
	b := binary.BigEndian.AppendUint16(nil, 1)
	for _, s := range []string{name, "octet", "blksize", "1468", "tsize", "0"} {
		b = append(append(b, s...), 0)
	}
	return b
}

// 64 unanswered read requests from 64 addresses, one packet each, used to
// hold every transfer slot until pin/tftp gave up on them (~15 s) and
// deny TFTP to every machine. The oldest unanswered transfer now makes
// room for a new client.
func TestTFTPUnansweredRequestsDoNotDenyService(t *testing.T) {
	root, _ := tftpRoot(t)
	addr, srv, _ := startTFTP(t, root)
	// One request each from 64 addresses, never acknowledged.
	var peers []*rawPeer
	for i := range 64 {
		p := newRawPeer(t, net.IPv4(127, 0, 1, byte(i+1)), addr)
		p.request("efi/ipxe.efi")
		peers = append(peers, p)
	}
	// Every request holds a transfer once the server has answered it.
	for _, p := range peers {
		if op, _, _ := p.next(); op != 6 { // OACK
			t.Fatalf("peer %s: opcode %d, want OACK", p.c.LocalAddr(), op)
		}
	}
	got, _, err := fetch(t, addr, "efi/ipxe.efi", 0)
	if err != nil || string(got) != "efi" {
		t.Fatalf("a good client after 64 unanswered requests: %q, %v (stats %+v)", got, err, srv.Stats())
	}
	if st := srv.Stats(); st.Busy != 0 || st.Shed+st.Expired == 0 {
		t.Errorf("stats %+v", st)
	}
}

// rawPeer is a TFTP client driven packet by packet.
type rawPeer struct {
	t      *testing.T
	c      *net.UDPConn
	server *net.UDPAddr
	tid    *net.UDPAddr // where the server answers from
}

func newRawPeer(t *testing.T, ip net.IP, server string) *rawPeer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sa, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	return &rawPeer{t: t, c: c, server: sa}
}

func (p *rawPeer) request(name string) {
	p.t.Helper()
	if _, err := p.c.WriteToUDP(rrq(name), p.server); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) send(op, block uint16) {
	p.t.Helper()
	b := binary.BigEndian.AppendUint16(nil, op)
	b = binary.BigEndian.AppendUint16(b, block)
	if op == 5 {
		b = append(b, "cancelled\x00"...)
	}
	if _, err := p.c.WriteToUDP(b, p.tid); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the next packet's opcode, its block (or error code) and
// the rest; a hang guard, not a timing assertion.
func (p *rawPeer) next() (op, block uint16, rest string) {
	p.t.Helper()
	buf := make([]byte, 70000)
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := p.c.ReadFromUDP(buf)
	if err != nil {
		p.t.Fatalf("peer %s: nothing from the server: %v", p.c.LocalAddr(), err)
	}
	if n < 4 {
		p.t.Fatalf("peer %s: short packet %x", p.c.LocalAddr(), buf[:n])
	}
	p.tid = from
	return binary.BigEndian.Uint16(buf), binary.BigEndian.Uint16(buf[2:]), string(buf[4:n])
}

// answeredHold starts a transfer of name, acknowledges the option
// acknowledgement and the first block, and then holds the transfer open.
func (p *rawPeer) answeredHold(name string) {
	p.t.Helper()
	p.request(name)
	if op, _, _ := p.next(); op != 6 {
		p.t.Fatalf("opcode %d, want OACK", op)
	}
	p.send(4, 0)
	if op, blk, _ := p.next(); op != 3 || blk != 1 {
		p.t.Fatalf("opcode %d block %d, want DATA 1", op, blk)
	}
	p.send(4, 1)
	if op, blk, _ := p.next(); op != 3 || blk != 2 {
		p.t.Fatalf("opcode %d block %d, want DATA 2", op, blk)
	}
}

// waitIdle waits until the server holds no transfer (a condition, with
// a hang guard).
func waitIdle(t *testing.T, srv *TFTPServer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		srv.mu.Lock()
		g := srv.gate
		srv.mu.Unlock()
		g.mu.Lock()
		n := len(g.xfers)
		g.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transfers still held", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTFTPEndsTransfersWithoutFirstACK(t *testing.T) {
	root, _ := tftpRoot(t)
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Root: root, Timeout: time.Minute, FirstACKWait: 20 * time.Millisecond})
	p := newRawPeer(t, net.IPv4(127, 0, 2, 1), addr)
	p.request("efi/ipxe.efi")
	if op, _, _ := p.next(); op != 6 {
		t.Fatalf("opcode %d, want OACK", op)
	}
	// No ACK: the server ends the transfer itself, long before pin/tftp's
	// retransmissions (a minute apart here) would have given up.
	if op, _, msg := p.next(); op != 5 || !strings.Contains(msg, "ended") {
		t.Fatalf("opcode %d %q, want ERROR", op, msg)
	}
	waitIdle(t, srv)
	if st := srv.Stats(); st.Expired != 1 || st.Served != 0 {
		t.Errorf("stats %+v", st)
	}
	if got, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err != nil || string(got) != "efi" {
		t.Fatalf("after: %q %v", got, err)
	}
}

// A source over its share first loses its own oldest unanswered
// transfer; once all of its transfers answer, it is refused, and other
// sources are served all along.
func TestTFTPPerSourceCap(t *testing.T) {
	root, _ := tftpRoot(t)
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Root: root, Timeout: time.Minute, FirstACKWait: time.Minute, PerSource: 2})
	src := net.IPv4(127, 0, 2, 2)
	var silent []*rawPeer
	for range 3 {
		p := newRawPeer(t, src, addr)
		p.request("efi/ipxe.efi")
		if op, _, _ := p.next(); op != 6 {
			t.Fatalf("opcode %d, want OACK", op)
		}
		silent = append(silent, p)
	}
	if op, _, msg := silent[0].next(); op != 5 || !strings.Contains(msg, "ended") {
		t.Fatalf("oldest of the source: opcode %d %q, want ERROR", op, msg)
	}
	for _, p := range silent[1:] {
		p.send(5, 0) // the client gives up
	}
	waitIdle(t, srv)

	held := []*rawPeer{newRawPeer(t, src, addr), newRawPeer(t, src, addr)}
	for _, p := range held {
		p.answeredHold("undionly.kpxe")
	}
	defer func() {
		for _, p := range held {
			p.send(5, 0)
		}
	}()
	third := newRawPeer(t, src, addr)
	third.request("efi/ipxe.efi")
	if op, _, msg := third.next(); op != 5 || !strings.Contains(msg, "busy") {
		t.Fatalf("third from a full source: opcode %d %q, want busy", op, msg)
	}
	// Another machine is not affected.
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLocalAddr("127.0.2.3")
	c.SetTimeout(time.Second)
	wt, err := c.Receive("efi/ipxe.efi", "octet")
	if err != nil {
		t.Fatalf("another source: %v", err)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil || buf.String() != "efi" {
		t.Fatalf("another source: %q %v", buf.String(), err)
	}
	if st := srv.Stats(); st.Shed != 1 || st.Busy != 1 {
		t.Errorf("stats %+v", st)
	}
}

// When every slot is held by a client that answers, a new request is
// refused as busy rather than ending someone's good transfer.
func TestTFTPBusyWhenAllSlotsAnswer(t *testing.T) {
	root, _ := tftpRoot(t)
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Root: root, Timeout: time.Minute, FirstACKWait: time.Minute, MaxConcurrent: 1})
	holder := newRawPeer(t, net.IPv4(127, 0, 2, 4), addr)
	holder.answeredHold("undionly.kpxe")
	if _, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("want busy, got %v", err)
	}
	holder.send(5, 0)
	waitIdle(t, srv)
	if got, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err != nil || string(got) != "efi" {
		t.Fatalf("after release: %q %v", got, err)
	}
	if st := srv.Stats(); st.Busy != 1 || st.Shed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// blksize is negotiated down to MaxBlockSize, and a bad cap is refused.
func TestTFTPBlockSizeCap(t *testing.T) {
	root, big := tftpRoot(t)
	addr, _, _ := startTFTPConfig(t, TFTPConfig{Root: root, Timeout: time.Second, MaxBlockSize: 1024})
	p := newRawPeer(t, net.IPv4(127, 0, 2, 5), addr)
	p.request("undionly.kpxe") // asks for 1468
	op, blk, rest := p.next()
	opts := "\x00" + string([]byte{byte(blk >> 8), byte(blk)}) + rest // an OACK has no block number
	if op != 6 || !strings.Contains(opts, "\x00blksize\x001024\x00") {
		t.Fatalf("opcode %d options %q, want blksize 1024", op, opts)
	}
	p.send(5, 0)
	if got, _, err := fetch(t, addr, "undionly.kpxe", 1468); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("fetch at the cap: %d bytes, %v", len(got), err)
	}
	for _, n := range []int{100, 511, 70000} {
		if _, err := NewTFTPServer(TFTPConfig{Root: root, MaxBlockSize: n}); err == nil || !strings.Contains(err.Error(), "512..65464") {
			t.Errorf("MaxBlockSize %d: %v", n, err)
		}
	}
}
