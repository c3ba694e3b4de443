package netboot

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// fuzzRelays is the configured relay prefix of the fuzzed handlers,
// besides the fixture's segments (10.99.0.0/24 local, 10.98.0.0/24
// behind 10.98.0.1).
var fuzzRelays = []netip.Prefix{netip.MustParsePrefix("10.66.0.0/24")}

// FuzzHandleDHCP feeds two arbitrary packets, in order, to a handler
// built fresh for each input (its own address store, booter and
// recorder), so that what one packet changes (a dynamic lease, a learnt
// address) is seen by the next and a failing input reproduces alone.
// cfg picks the mode (bit 0: proxy), discovery (bit 1) and each packet's
// port (bits 2 and 3: 4011 instead of 67). Besides never panicking, every
// reply must keep the handler's promises:
//
//   - a MAC with no reservation gets nothing while discovery is off;
//   - an offered or acknowledged address is the MAC's reservation, or one
//     from the dynamic range when discovery gave it one; proxy mode
//     offers none;
//   - a reply to a relay goes to an accepted giaddr (a configured relay or
//     one inside a known segment);
//   - option 82 is echoed only on relayed requests;
//   - what is recorded names the request's MAC, and a lease only for an
//     ACK to a REQUEST, for the address acknowledged.
//
// make test runs it for a fixed number of inputs; for longer:
//
//	go test ./netboot -run '^$' -fuzz '^FuzzHandleDHCP$' -fuzztime 10000000x
func FuzzHandleDHCP(f *testing.F) {
	seeds := []pkt{
		{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.INTEL_X86PC), vendor: "PXEClient:Arch:00000:UNDI:002001"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007", user: "iPXE"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64_HTTP), vendor: "HTTPClient:Arch:00016"},
		{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.10", serverID: "10.99.0.1", vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeRequest, mac: macKnown, ciaddr: "10.99.0.10"},
		{mt: dhcpv4.MessageTypeInform, mac: macKnown, ciaddr: "10.99.0.10"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, giaddr: "10.98.0.1", arch: archp(iana.EFI_ARM64), vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, giaddr: "10.66.0.1", arch: archp(iana.EFI_ARM64), vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, giaddr: "10.77.0.1", vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, arch: archp(iana.EFI_BC), vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeRelease, mac: macKnown, ciaddr: "10.99.0.10"},
	}
	for i, p := range seeds {
		next := seeds[(i+1)%len(seeds)].build(f)
		for cfg := range uint8(16) {
			if cfg%5 == uint8(i%5) { // a spread, not every combination
				f.Add(p.build(f), next, cfg)
			}
		}
	}
	// A DISCOVER then the REQUEST for what discovery offers.
	f.Add(pkt{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, arch: archp(0), vendor: "PXEClient"}.build(f),
		pkt{mt: dhcpv4.MessageTypeRequest, mac: macUnknown, requested: "10.99.0.100", serverID: "10.99.0.1", vendor: "PXEClient"}.build(f), uint8(2))
	f.Add([]byte{}, []byte{1, 1, 6, 0}, uint8(0))

	from := netip.MustParseAddrPort("10.99.0.50:68")
	f.Fuzz(func(t *testing.T, first, second []byte, cfg uint8) {
		fx := newFixture(t)
		fx.booter.SetDiscovery(&Boot{Kind: BootDiscovery, Kernel: httpBase + "/boot/files/vmlinuz"})
		mode, disc := ModeReservation, cfg&2 != 0
		if cfg&1 != 0 {
			mode = ModeProxy
		}
		// What the handler records goes to the real AsyncRecorder (a small
		// buffer, so that its drop path is taken too) and to rec, which
		// keeps each packet's share for the checks.
		async := NewAsyncRecorder(fx.rec, AsyncRecorderConfig{Buffer: 1, PendingLeases: 1})
		rec := &teeRecorder{to: async}
		h, err := NewDHCPHandler(DHCPConfig{Mode: mode, ServerIP: serverIP, HTTPBase: httpBase, Discovery: disc,
			Relays: fuzzRelays, Booter: fx.booter, Addresses: fx.addrs, Recorder: rec})
		if err != nil {
			t.Fatal(err)
		}
		for i, data := range [][]byte{first, second} {
			port := uint16(67)
			if cfg&(4<<i) != 0 {
				port = proxyPort
			}
			if req, err := dhcpv4.FromBytes(data); err == nil {
				checkDecoders(t, req)
			}
			rec.events, rec.leases = rec.events[:0], rec.leases[:0]
			rep, _ := h.Handle(context.Background(), data, from, port)
			checkReply(t, fx, mode, disc, data, rep, rec.events, rec.leases)
		}
		// Run with a context already done flushes what is pending and
		// returns: everything recorded is written or counted as dropped.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		async.Run(ctx)
		st := async.Stats()
		if got := uint64(len(fx.rec.Events())) + st.DroppedEvents; got != rec.allEvents {
			t.Fatalf("recorder: %d events written + %d dropped, %d recorded", len(fx.rec.Events()), st.DroppedEvents, rec.allEvents)
		}
		if got := uint64(len(fx.rec.Leases())) + st.DroppedLeases; got > rec.allLeases {
			t.Fatalf("recorder: %d leases written + %d dropped, %d recorded", len(fx.rec.Leases()), st.DroppedLeases, rec.allLeases)
		}
	})
}

// checkDecoders holds the handler's allocation-free readers of a
// request's options to the library's getters.
func checkDecoders(t *testing.T, req *dhcpv4.DHCPv4) {
	t.Helper()
	if got, want := messageType(req.Options), req.MessageType(); got != want {
		t.Fatalf("message type %v, the library reads %v", got, want)
	}
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionServerIdentifier, dhcpv4.OptionRequestedIPAddress} {
		got, ok := optionIP4(req.Options, code)
		want := dhcpv4.GetIP(code, req.Options)
		if ok != (want != nil) || ok && !net.IP(got.AsSlice()).Equal(want) {
			t.Fatalf("option %v: %v %v, the library reads %v", code, got, ok, want)
		}
	}
	archs := req.ClientArch()
	if a, ok := clientArch(req.Options); ok != (len(archs) > 0) || ok && a != Arch(archs[0]) {
		t.Fatalf("client arch %v %v, the library reads %v", a, ok, archs)
	}
}

// teeRecorder keeps what one packet recorded and passes everything on.
type teeRecorder struct {
	to                   Recorder
	events               []Event
	leases               []Lease
	allEvents, allLeases uint64
}

func (r *teeRecorder) Event(e Event) {
	r.events = append(r.events, e)
	r.allEvents++
	r.to.Event(e)
}

func (r *teeRecorder) Lease(l Lease) {
	r.leases = append(r.leases, l)
	r.allLeases++
	r.to.Lease(l)
}

// checkReply checks rep, the answer to data, and the events and leases
// recorded while answering it.
func checkReply(t *testing.T, fx *fixture, mode Mode, disc bool, data []byte, rep *Reply, evs []Event, ls []Lease) {
	t.Helper()
	if rep == nil {
		if len(ls) != 0 {
			t.Fatalf("lease recorded without a reply: %+v", ls)
		}
		return
	}
	b := rep.Packet.ToBytes()
	if got := appendPacket(nil, rep.Packet); !bytes.Equal(got, b) {
		t.Fatalf("the reply as the server sends it differs from the library's encoding:\n%x\n%x", got, b)
	}
	if len(b) > 1500 {
		t.Fatalf("reply of %d bytes", len(b))
	}
	if _, err := dhcpv4.FromBytes(b); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	r := rep.Packet
	if r.OpCode != dhcpv4.OpcodeBootReply || !r.ServerIdentifier().Equal(net.IP(serverIP.AsSlice())) {
		t.Fatalf("bad reply: %s", r.Summary())
	}
	req, err := dhcpv4.FromBytes(data)
	if err != nil {
		t.Fatalf("a reply to a packet that does not parse: %v", err)
	}
	// Any option set a client can send, through both encoders.
	if got, lib := appendPacket(nil, req), req.ToBytes(); !bytes.Equal(got, lib) {
		t.Fatalf("appendPacket differs from the library's encoding of the request:\n%x\n%x", got, lib)
	}
	mac := req.ClientHWAddr
	reserved, isReserved := fx.reserved(mac)
	if !isReserved && !disc {
		t.Fatalf("unknown MAC %s answered with discovery off: %s", mac, r.Summary())
	}
	yi, hasYI := addr4(r.YourIPAddr)
	switch {
	case mode == ModeProxy && hasYI:
		t.Fatalf("proxy mode offered an address: %s", r.Summary())
	case hasYI && isReserved && yi != reserved:
		t.Fatalf("yiaddr %v, reservation of %s is %v", yi, mac, reserved)
	case hasYI && !isReserved && !fx.dynamic(yi):
		t.Fatalf("yiaddr %v for unknown %s is outside the dynamic range", yi, mac)
	}
	if rep.Dest.Kind == DestRelay && !relayAcceptedInFixture(rep.Dest.Addr.Addr()) {
		t.Fatalf("reply sent to giaddr %v, which is no accepted relay", rep.Dest.Addr)
	}
	if _, relayed := addr4(req.GatewayIPAddr); !relayed && r.Options.Has(dhcpv4.OptionRelayAgentInformation) {
		t.Fatalf("option 82 on a reply to a request that was not relayed")
	}
	if len(evs) != 1 || evs[0].MAC != mac.String() {
		t.Fatalf("a reply to %s recorded events %+v", mac, evs)
	}
	for _, l := range ls {
		if req.MessageType() != dhcpv4.MessageTypeRequest || r.MessageType() != dhcpv4.MessageTypeAck || l.IP != yi || l.MAC != mac.String() {
			t.Fatalf("lease %+v recorded for a %s answered by %s", l, req.MessageType(), r.Summary())
		}
	}
	if len(ls) > 1 {
		t.Fatalf("%d leases for one packet", len(ls))
	}
}

// reserved returns mac's reservation in the fixture.
func (f *fixture) reserved(mac net.HardwareAddr) (netip.Addr, bool) {
	f.addrs.mu.Lock()
	defer f.addrs.mu.Unlock()
	r, ok := f.addrs.byMAC[mac.String()]
	return r.IP, ok
}

// dynamic reports whether a is in the fixture's dynamic range.
func (f *fixture) dynamic(a netip.Addr) bool {
	return netip.MustParseAddr("10.99.0.100").Compare(a) <= 0 && a.Compare(netip.MustParseAddr("10.99.0.101")) <= 0
}

// relayAcceptedInFixture: a configured relay, or inside one of the
// fixture's segments.
func relayAcceptedInFixture(a netip.Addr) bool {
	for _, p := range append([]netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("10.98.0.0/24")}, fuzzRelays...) {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
