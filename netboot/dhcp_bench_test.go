package netboot

import (
	"context"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// BenchmarkDHCPHandleRequest is one known machine's REQUEST answered with
// an ACK, its lease and its event recorded: what a DHCP worker does per
// packet, without the socket. Its allocations are what a boot storm's GC
// makes the workers pay back (assists).
func BenchmarkDHCPHandleRequest(b *testing.B) {
	f := newFixture(b)
	rec := NewAsyncRecorder(&countingSink{}, AsyncRecorderConfig{})
	h, err := NewDHCPHandler(DHCPConfig{Mode: ModeReservation, ServerIP: serverIP, HTTPBase: httpBase,
		Booter: f.booter, Addresses: f.addrs, Recorder: rec})
	if err != nil {
		b.Fatal(err)
	}
	req := pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, arch: archp(iana.INTEL_X86PC), vendor: "PXEClient",
		requested: "10.99.0.10", serverID: serverIP.String()}.build(b)
	peer := netip.MustParseAddrPort("10.99.0.10:68")
	ctx := context.Background()
	out := make([]byte, 0, maxDHCPPacket) // a worker's reply buffer
	b.ReportAllocs()
	for b.Loop() {
		rep, _ := h.Handle(ctx, req, peer, dhcpv4.ServerPort)
		if rep == nil {
			b.Fatal("no reply")
		}
		_ = appendPacket(out[:0], rep.Packet)
		h.recycle(rep) // as the worker does once it is sent
		rec.flushEvents(ctx)
	}
}
