package netboot

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	macKnown   = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	macUnknown = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	macRelayed = net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x77, 0x77}
	macNoBoot  = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x01}
	serverIP   = netip.MustParseAddr("10.99.0.1")
	relayIP    = netip.MustParseAddr("10.98.0.1")
)

const httpBase = "http://10.99.0.1:8080"

type fixture struct {
	addrs  *MemoryAddresses
	booter *MemoryBooter
	rec    *MemoryRecorder
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{addrs: NewMemoryAddresses(), booter: NewMemoryBooter(), rec: NewMemoryRecorder()}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.addrs.AddSegment(Subnet{
		Prefix: netip.MustParsePrefix("10.99.0.0/24"), Gateway: serverIP,
		DNS: []netip.Addr{serverIP}, Domain: "lab.test", LeaseTime: 10 * time.Minute,
	}, netip.Addr{}, netip.MustParseAddr("10.99.0.100"), netip.MustParseAddr("10.99.0.101")))
	must(f.addrs.AddSegment(Subnet{Prefix: netip.MustParsePrefix("10.98.0.0/24"), Gateway: relayIP}, relayIP, netip.Addr{}, netip.Addr{}))
	must(f.addrs.Reserve(macKnown, netip.MustParseAddr("10.99.0.10"), "gpu-a01-01"))
	must(f.addrs.Reserve(macNoBoot, netip.MustParseAddr("10.99.0.11"), "gpu-a01-02"))
	must(f.addrs.Reserve(macRelayed, netip.MustParseAddr("10.98.0.20"), "gpu-b01-01"))
	prov := Boot{Kind: BootProvision, Kernel: httpBase + "/boot/files/vmlinuz", Initrds: []string{httpBase + "/boot/files/initrd.cpio.gz"}, Cmdline: "console=ttyS0"}
	f.booter.Set(macKnown, prov)
	f.booter.Set(macRelayed, prov)
	return f
}

func (f *fixture) handler(t testing.TB, mode Mode, discovery bool) *DHCPHandler {
	t.Helper()
	h, err := NewDHCPHandler(DHCPConfig{
		Mode: mode, ServerIP: serverIP, HTTPBase: httpBase, Discovery: discovery,
		Booter: f.booter, Addresses: f.addrs, Recorder: f.rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type pkt struct {
	mt        dhcpv4.MessageType
	mac       net.HardwareAddr
	arch      *iana.Arch
	vendor    string
	user      string
	giaddr    string
	ciaddr    string
	requested string
	serverID  string
	broadcast bool
}

func archp(a iana.Arch) *iana.Arch { return &a }

func (p pkt) build(t testing.TB) []byte {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(p.mt), dhcpv4.WithHwAddr(p.mac), dhcpv4.WithBroadcast(p.broadcast)}
	if p.arch != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientArch(*p.arch)))
	}
	if p.vendor != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(p.vendor)))
	}
	if p.user != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptUserClass(p.user)))
	}
	if p.giaddr != "" {
		mods = append(mods, dhcpv4.WithGatewayIP(net.ParseIP(p.giaddr)), dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("port7")))))
	}
	if p.ciaddr != "" {
		mods = append(mods, dhcpv4.WithClientIP(net.ParseIP(p.ciaddr)))
	}
	if p.requested != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(p.requested))))
	}
	if p.serverID != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(p.serverID))))
	}
	d, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d.ToBytes()
}

var peer = netip.MustParseAddrPort("0.0.0.0:68")

func TestBootFileTable(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, ModeReservation, false)
	cases := []struct {
		name       string
		p          pkt
		file       string
		tftp       bool   // options 66 set
		vendorEcho string // option 60 in the reply
	}{
		{"bios", pkt{arch: archp(iana.INTEL_X86PC), vendor: "PXEClient:Arch:00000:UNDI:002001"}, "undionly.kpxe", true, ""},
		{"uefi-x64", pkt{arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007:UNDI:003016"}, "ipxe.efi", true, ""},
		{"uefi-bc", pkt{arch: archp(iana.EFI_BC), vendor: "PXEClient:Arch:00009:UNDI:003016"}, "ipxe.efi", true, ""},
		{"arm64", pkt{arch: archp(iana.EFI_ARM64), vendor: "PXEClient:Arch:00011:UNDI:003000"}, "snp.efi", true, ""},
		{"ipxe-bios", pkt{arch: archp(iana.INTEL_X86PC), vendor: "PXEClient:Arch:00000:UNDI:002001", user: "iPXE"}, httpBase + "/boot/52:54:00:12:34:56.ipxe", false, ""},
		{"ipxe-efi", pkt{arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007:UNDI:003010", user: "iPXE"}, httpBase + "/boot/52:54:00:12:34:56.ipxe", false, ""},
		{"http-x64", pkt{arch: archp(iana.EFI_X86_64_HTTP), vendor: "HTTPClient:Arch:00016:UNDI:003001"}, httpBase + "/boot/ipxe/ipxe.efi", false, "HTTPClient"},
		{"http-arm64", pkt{arch: archp(iana.EFI_ARM64_HTTP), vendor: "HTTPClient:Arch:00019:UNDI:003001"}, httpBase + "/boot/ipxe/snp.efi", false, "HTTPClient"},
		{"no-arch-pxe", pkt{vendor: "PXEClient"}, "undionly.kpxe", true, ""},
		{"os-dhcp-client", pkt{vendor: "udhcp 1.36.1"}, "", false, ""},
		{"unsupported-arch", pkt{arch: archp(iana.EFI_IA32), vendor: "PXEClient:Arch:00006"}, "", false, ""},
	}
	for _, tc := range cases {
		for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
			t.Run(tc.name+"/"+mt.String(), func(t *testing.T) {
				p := tc.p
				p.mt, p.mac = mt, macKnown
				if mt == dhcpv4.MessageTypeRequest {
					p.requested, p.serverID = "10.99.0.10", serverIP.String()
				}
				rep, why := h.Handle(context.Background(), p.build(t), peer, 67)
				if rep == nil {
					t.Fatalf("no reply: %v", why)
				}
				r := rep.Packet
				want := dhcpv4.MessageTypeOffer
				if mt == dhcpv4.MessageTypeRequest {
					want = dhcpv4.MessageTypeAck
				}
				if r.MessageType() != want {
					t.Fatalf("message type %v, want %v", r.MessageType(), want)
				}
				if !r.ServerIdentifier().Equal(net.ParseIP("10.99.0.1")) {
					t.Errorf("option 54 = %v", r.ServerIdentifier())
				}
				if !r.YourIPAddr.Equal(net.ParseIP("10.99.0.10")) {
					t.Errorf("yiaddr = %v", r.YourIPAddr)
				}
				if got := r.BootFileNameOption(); got != tc.file {
					t.Errorf("option 67 = %q, want %q", got, tc.file)
				}
				if tc.file != "" {
					if r.BootFileName != tc.file {
						t.Errorf("file field = %q, want %q", r.BootFileName, tc.file)
					}
					if !r.ServerIPAddr.Equal(net.ParseIP("10.99.0.1")) {
						t.Errorf("siaddr = %v", r.ServerIPAddr)
					}
				} else if r.BootFileName != "" || r.Options.Has(dhcpv4.OptionTFTPServerName) {
					t.Errorf("plain lease carries boot options: file=%q 66=%q", r.BootFileName, r.TFTPServerName())
				}
				if got := r.TFTPServerName(); tc.tftp != (got == "10.99.0.1") {
					t.Errorf("option 66 = %q (tftp=%v)", got, tc.tftp)
				}
				if got := r.ClassIdentifier(); got != tc.vendorEcho {
					t.Errorf("option 60 = %q, want %q", got, tc.vendorEcho)
				}
				if got := r.SubnetMask().String(); got != "ffffff00" {
					t.Errorf("mask = %s", got)
				}
				if r.HostName() != "gpu-a01-01" || r.IPAddressLeaseTime(0) != 10*time.Minute {
					t.Errorf("hostname %q lease %v", r.HostName(), r.IPAddressLeaseTime(0))
				}
			})
		}
	}
}

func TestReservationPlainLeaseAndNak(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, ModeReservation, false)
	ctx := context.Background()
	// A reserved machine the Booter does not netboot: address, no boot file.
	rep, _ := h.Handle(ctx, pkt{mt: dhcpv4.MessageTypeDiscover, mac: macNoBoot, arch: archp(0), vendor: "PXEClient"}.build(t), peer, 67)
	if rep == nil || rep.Packet.BootFileNameOption() != "" || !rep.Packet.YourIPAddr.Equal(net.ParseIP("10.99.0.11")) {
		t.Fatalf("plain lease: %v", rep)
	}
	// Wrong requested address: NAK, broadcast.
	rep, _ = h.Handle(ctx, pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.77"}.build(t), peer, 67)
	if rep == nil || rep.Packet.MessageType() != dhcpv4.MessageTypeNak || rep.Dest.Kind != DestBroadcast {
		t.Fatalf("want broadcast NAK, got %v", rep)
	}
	// A REQUEST for another server: silence.
	rep, why := h.Handle(ctx, pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.10", serverID: "10.99.0.2"}.build(t), peer, 67)
	if rep != nil || why != DropOtherServer {
		t.Fatalf("other server: %v %v", rep, why)
	}
	// Renewal (ciaddr): ACK unicast to ciaddr:68, lease recorded.
	rep, _ = h.Handle(ctx, pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, ciaddr: "10.99.0.10"}.build(t), peer, 67)
	if rep == nil || rep.Packet.MessageType() != dhcpv4.MessageTypeAck || rep.Dest != (Destination{DestUnicast, netip.MustParseAddrPort("10.99.0.10:68")}) {
		t.Fatalf("renewal: %+v", rep)
	}
	if l, ok := f.rec.Leases()[macKnown.String()]; !ok || l.IP != netip.MustParseAddr("10.99.0.10") {
		t.Errorf("lease not recorded: %+v", f.rec.Leases())
	}
	// INFORM: ACK without yiaddr or lease time.
	rep, _ = h.Handle(ctx, pkt{mt: dhcpv4.MessageTypeInform, mac: macKnown, ciaddr: "10.99.0.10"}.build(t), peer, 67)
	if rep == nil || !rep.Packet.YourIPAddr.IsUnspecified() || rep.Packet.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Fatalf("inform: %v", rep)
	}
	// RELEASE gets nothing.
	if rep, why := h.Handle(ctx, pkt{mt: dhcpv4.MessageTypeRelease, mac: macKnown, ciaddr: "10.99.0.10"}.build(t), peer, 67); rep != nil || why != DropMessageType {
		t.Fatalf("release: %v %v", rep, why)
	}
}

func TestUnknownMAC(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p := pkt{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007"}
	h := f.handler(t, ModeReservation, false)
	if rep, why := h.Handle(ctx, p.build(t), peer, 67); rep != nil || why != DropUnknownMAC {
		t.Fatalf("discovery off: %v %v", rep, why)
	}
	// Discovery on: dynamic address and the discovery boot.
	f.booter.SetDiscovery(&Boot{Kind: BootDiscovery, Kernel: httpBase + "/boot/files/vmlinuz", Initrds: []string{httpBase + "/boot/files/initrd.cpio.gz"}})
	h = f.handler(t, ModeReservation, true)
	rep, _ := h.Handle(ctx, p.build(t), peer, 67)
	if rep == nil || !rep.Packet.YourIPAddr.Equal(net.ParseIP("10.99.0.100")) || rep.Packet.BootFileNameOption() != "ipxe.efi" {
		t.Fatalf("discovery: %v", rep)
	}
	// Same MAC again: same address.
	rep, _ = h.Handle(ctx, p.build(t), peer, 67)
	if rep == nil || !rep.Packet.YourIPAddr.Equal(net.ParseIP("10.99.0.100")) {
		t.Fatalf("second discovery: %v", rep)
	}
	// Range of two: third MAC gets .101, fourth nothing.
	p.mac = net.HardwareAddr{2, 0, 0, 0, 0, 3}
	if rep, _ := h.Handle(ctx, p.build(t), peer, 67); rep == nil || !rep.Packet.YourIPAddr.Equal(net.ParseIP("10.99.0.101")) {
		t.Fatalf("third: %v", rep)
	}
	p.mac = net.HardwareAddr{2, 0, 0, 0, 0, 4}
	if rep, why := h.Handle(ctx, p.build(t), peer, 67); rep != nil || why != DropAddresses {
		t.Fatalf("exhausted: %v %v", rep, why)
	}
}

func TestRelay(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, ModeReservation, false)
	ctx := context.Background()
	p := pkt{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, arch: archp(0), vendor: "PXEClient", giaddr: "10.98.0.1", broadcast: true}
	rep, why := h.Handle(ctx, p.build(t), netip.MustParseAddrPort("10.98.0.1:67"), 67)
	if rep == nil {
		t.Fatalf("no reply: %v", why)
	}
	r := rep.Packet
	if !r.YourIPAddr.Equal(net.ParseIP("10.98.0.20")) || !r.GatewayIPAddr.Equal(net.ParseIP("10.98.0.1")) {
		t.Errorf("yiaddr %v giaddr %v", r.YourIPAddr, r.GatewayIPAddr)
	}
	if rep.Dest != (Destination{DestRelay, netip.MustParseAddrPort("10.98.0.1:67")}) {
		t.Errorf("dest %+v", rep.Dest)
	}
	if r.RelayAgentInfo() == nil {
		t.Error("option 82 not echoed")
	}
	if !r.Router()[0].Equal(net.ParseIP("10.98.0.1")) {
		t.Errorf("router %v", r.Router())
	}
	// The relayed machine is unknown on the local segment, and a local
	// machine is unknown behind the relay.
	p.giaddr = ""
	if rep, why := h.Handle(ctx, p.build(t), peer, 67); rep != nil || why != DropUnknownMAC {
		t.Errorf("relayed MAC on local segment: %v %v", rep, why)
	}
	p.mac, p.giaddr = macKnown, "10.98.0.1"
	if rep, why := h.Handle(ctx, p.build(t), peer, 67); rep != nil || why != DropUnknownMAC {
		t.Errorf("local MAC behind relay: %v %v", rep, why)
	}
	// A NAK to a relayed client still goes to the relay.
	q := pkt{mt: dhcpv4.MessageTypeRequest, mac: macRelayed, giaddr: "10.98.0.1", requested: "10.98.0.99"}
	if rep, _ := h.Handle(ctx, q.build(t), peer, 67); rep == nil || rep.Packet.MessageType() != dhcpv4.MessageTypeNak || rep.Dest.Kind != DestRelay {
		t.Errorf("relayed NAK: %+v", rep)
	}
}

// A giaddr is where the reply goes: one that is neither a configured
// relay nor on a segment the request resolves to gets nothing, and is
// counted.
func TestRelayFromUnknownGiaddrDropped(t *testing.T) {
	f := newFixture(t)
	f.booter.SetDiscovery(&Boot{Kind: BootDiscovery, Kernel: httpBase + "/boot/files/vmlinuz"})
	ctx := context.Background()
	const stranger = "10.66.0.1" // no segment, not configured
	for _, mode := range []Mode{ModeReservation, ModeProxy} {
		for _, disc := range []bool{false, true} {
			h := f.handler(t, mode, disc)
			for _, mac := range []net.HardwareAddr{macRelayed, macKnown, macUnknown} {
				p := pkt{mt: dhcpv4.MessageTypeDiscover, mac: mac, arch: archp(0), vendor: "PXEClient", giaddr: stranger}
				rep, why := h.Handle(ctx, p.build(t), netip.MustParseAddrPort(stranger+":67"), 67)
				if rep != nil {
					t.Errorf("%v discovery=%v %v: replied to %v", mode, disc, mac, rep.Dest)
				}
				// A reserved MAC is unknown on the stranger's segment first
				// when discovery is off; otherwise the relay is the reason.
				if disc && why != DropUnknownRelay {
					t.Errorf("%v discovery=%v %v: dropped as %v, want unknown_relay", mode, disc, mac, why)
				}
			}
			if disc && h.Stats().Dropped["unknown_relay"] != 3 {
				t.Errorf("%v discovery=%v: stats %+v", mode, disc, h.Stats())
			}
		}
	}
	// A configured relay is accepted wherever its address is.
	h, err := NewDHCPHandler(DHCPConfig{Mode: ModeProxy, ServerIP: serverIP, HTTPBase: httpBase, Discovery: true,
		Booter: f.booter, Addresses: f.addrs, Relays: []netip.Prefix{netip.MustParsePrefix("10.66.0.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	p := pkt{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, arch: archp(0), vendor: "PXEClient", giaddr: stranger}
	if rep, why := h.Handle(ctx, p.build(t), netip.MustParseAddrPort(stranger+":67"), 67); rep == nil || rep.Dest.Addr != netip.MustParseAddrPort(stranger+":67") {
		t.Errorf("configured relay: %+v %v", rep, why)
	}
}

// Option 82 belongs to the relay: it is echoed to a relay and never on a
// request that was not relayed, whatever the client put in it.
func TestOption82OnlyOnRelayed(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, ModeReservation, false)
	big := dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), bytes.Repeat([]byte{'x'}, 250)),
		dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(2), bytes.Repeat([]byte{'y'}, 250)),
		dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(9), bytes.Repeat([]byte{'z'}, 500)))
	d, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithHwAddr(macKnown),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
		dhcpv4.WithOption(big))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.GetOneOption(dhcpv4.OptionRelayAgentInformation)) < 1000 {
		t.Fatalf("test packet: option 82 of %d bytes", len(d.GetOneOption(dhcpv4.OptionRelayAgentInformation)))
	}
	rep, why := h.Handle(context.Background(), d.ToBytes(), peer, 67)
	if rep == nil {
		t.Fatalf("no reply: %v", why)
	}
	if rep.Packet.Options.Has(dhcpv4.OptionRelayAgentInformation) {
		t.Errorf("option 82 echoed on a request that was not relayed (%d bytes)", len(rep.Packet.ToBytes()))
	}
	p := pkt{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, arch: archp(0), vendor: "PXEClient", giaddr: relayIP.String()}
	rep, why = h.Handle(context.Background(), p.build(t), netip.AddrPortFrom(relayIP, 67), 67)
	if rep == nil {
		t.Fatalf("relayed: no reply: %v", why)
	}
	if got := rep.Packet.GetOneOption(dhcpv4.OptionRelayAgentInformation); !bytes.Contains(got, []byte("port7")) {
		t.Errorf("relayed: option 82 %q, want it echoed", got)
	}
}

func TestProxyMode(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, ModeProxy, false)
	ctx := context.Background()
	p := pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007:UNDI:003016"}
	rep, why := h.Handle(ctx, p.build(t), peer, 67)
	if rep == nil {
		t.Fatalf("proxy offer: %v", why)
	}
	r := rep.Packet
	if r.MessageType() != dhcpv4.MessageTypeOffer || !r.YourIPAddr.IsUnspecified() || r.BootFileNameOption() != "ipxe.efi" ||
		r.ClassIdentifier() != "PXEClient" || r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || !r.ServerIdentifier().Equal(net.ParseIP("10.99.0.1")) {
		t.Fatalf("proxy offer wrong: %s", r.Summary())
	}
	if rep.Dest.Kind != DestBroadcast {
		t.Errorf("proxy offer dest %+v", rep.Dest)
	}
	// Port 4011: REQUEST from the client's new address → ACK back to it.
	q := pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007", ciaddr: "10.99.0.50"}
	rep, why = h.Handle(ctx, q.build(t), netip.MustParseAddrPort("10.99.0.50:68"), 4011)
	if rep == nil || rep.Packet.MessageType() != dhcpv4.MessageTypeAck || rep.Dest.Addr != netip.MustParseAddrPort("10.99.0.50:68") {
		t.Fatalf("4011 ack: %+v %v", rep, why)
	}
	// The 4011 REQUEST taught Addresses who holds 10.99.0.50.
	if m, ok := f.addrs.Owner(ctx, netip.MustParseAddr("10.99.0.50")); !ok || m.String() != macKnown.String() {
		t.Errorf("proxy lease not learnt: %v %v", m, ok)
	}
	// REQUEST on 67 belongs to the address server; its option 50 is learnt.
	q.ciaddr, q.requested, q.serverID = "", "10.99.0.51", "10.99.0.2"
	if rep, why := h.Handle(ctx, q.build(t), peer, 67); rep != nil || why != DropMessageType {
		t.Errorf("request on 67: %v %v", rep, why)
	}
	if m, ok := f.addrs.Owner(ctx, netip.MustParseAddr("10.99.0.51")); !ok || m.String() != macKnown.String() {
		t.Errorf("option 50 not learnt: %v %v", m, ok)
	}
	// Not netbooting: silence. Not PXE: silence. Unknown: silence.
	for _, tc := range []struct {
		p   pkt
		why DropReason
	}{
		{pkt{mt: dhcpv4.MessageTypeDiscover, mac: macNoBoot, arch: archp(0), vendor: "PXEClient"}, DropNoBoot},
		{pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, vendor: "dhcpcd-10"}, DropNoBoot},
		{pkt{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, arch: archp(0), vendor: "PXEClient"}, DropUnknownMAC},
	} {
		if rep, why := h.Handle(ctx, tc.p.build(t), peer, 67); rep != nil || why != tc.why {
			t.Errorf("%v: %v %v, want %v", tc.p.mac, rep, why, tc.why)
		}
	}
	// iPXE in proxy mode gets its script URL.
	p.user = "iPXE"
	if rep, _ := h.Handle(ctx, p.build(t), peer, 67); rep == nil || rep.Packet.BootFileNameOption() != httpBase+"/boot/52:54:00:12:34:56.ipxe" {
		t.Errorf("proxy iPXE: %v", rep)
	}
	st := h.Stats()
	if st.Dropped["no_boot"] != 2 || st.Dropped["unknown_mac"] != 1 || st.Replied != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestReplyDestination(t *testing.T) {
	mk := func(mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		d, err := dhcpv4.New(mods...)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	yi := dhcpv4.WithYourIP(net.ParseIP("10.99.0.10"))
	offer := dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer)
	nak := dhcpv4.WithMessageType(dhcpv4.MessageTypeNak)
	bc := netip.MustParseAddrPort("255.255.255.255:68")
	cases := []struct {
		name      string
		req, resp *dhcpv4.DHCPv4
		want      Destination
	}{
		{"relay wins over all", mk(dhcpv4.WithGatewayIP(net.ParseIP("10.98.0.1")), dhcpv4.WithClientIP(net.ParseIP("10.98.0.5")), dhcpv4.WithBroadcast(true)), mk(nak), Destination{DestRelay, netip.MustParseAddrPort("10.98.0.1:67")}},
		{"nak broadcast over ciaddr", mk(dhcpv4.WithClientIP(net.ParseIP("10.99.0.10"))), mk(nak), Destination{DestBroadcast, bc}},
		{"ciaddr over broadcast flag", mk(dhcpv4.WithClientIP(net.ParseIP("10.99.0.10")), dhcpv4.WithBroadcast(true)), mk(offer, yi), Destination{DestUnicast, netip.MustParseAddrPort("10.99.0.10:68")}},
		{"broadcast flag", mk(dhcpv4.WithBroadcast(true)), mk(offer, yi), Destination{DestBroadcast, bc}},
		{"yiaddr", mk(), mk(offer, yi), Destination{DestHardware, netip.MustParseAddrPort("10.99.0.10:68")}},
		{"nothing known", mk(), mk(offer), Destination{DestBroadcast, bc}},
	}
	for _, tc := range cases {
		if got := ReplyDestination(tc.req, tc.resp, 67, 68); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestMalformed(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, ModeReservation, true)
	good := pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(0), vendor: "PXEClient"}.build(t)
	reply := append([]byte(nil), good...)
	reply[0] = 2 // BOOTREPLY
	tokenRing := append([]byte(nil), good...)
	tokenRing[1] = 6
	longHW := append([]byte(nil), good...)
	longHW[2] = 16
	badOpt := append([]byte(nil), good[:240]...)
	badOpt = append(badOpt, 53, 200, 1) // option longer than the packet
	for name, b := range map[string][]byte{
		"empty": nil, "short": good[:100], "no-cookie": good[:236], "bootreply": reply,
		"not-ethernet": tokenRing, "hlen-16": longHW, "truncated-option": badOpt,
	} {
		if rep, why := h.Handle(context.Background(), b, peer, 67); rep != nil || why != DropMalformed {
			t.Errorf("%s: %v %v", name, rep, why)
		}
	}
	if got := h.Stats().Dropped["malformed"]; got != 7 {
		t.Errorf("malformed counter %d", got)
	}
}

func TestBooterError(t *testing.T) {
	f := newFixture(t)
	h, err := NewDHCPHandler(DHCPConfig{Mode: ModeReservation, ServerIP: serverIP, HTTPBase: httpBase, Addresses: f.addrs,
		Booter: BooterFunc(func(ctx context.Context, c Client) (Boot, error) { return Boot{}, context.DeadlineExceeded })})
	if err != nil {
		t.Fatal(err)
	}
	if rep, why := h.Handle(context.Background(), pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(0), vendor: "PXEClient"}.build(t), peer, 67); rep != nil || why != DropBooter {
		t.Fatalf("%v %v", rep, why)
	}
}

func TestNewDHCPHandlerChecks(t *testing.T) {
	b := NewMemoryBooter()
	for name, cfg := range map[string]DHCPConfig{
		"off":          {Mode: ModeOff, ServerIP: serverIP, HTTPBase: httpBase, Booter: b},
		"no server ip": {Mode: ModeProxy, HTTPBase: httpBase, Booter: b},
		"no booter":    {Mode: ModeProxy, ServerIP: serverIP, HTTPBase: httpBase},
		"no addresses": {Mode: ModeReservation, ServerIP: serverIP, HTTPBase: httpBase, Booter: b},
		"no http":      {Mode: ModeProxy, ServerIP: serverIP, Booter: b},
		"ipv6 relay":   {Mode: ModeProxy, ServerIP: serverIP, HTTPBase: httpBase, Booter: b, Relays: []netip.Prefix{netip.MustParsePrefix("fd00::1/128")}},
		"zero relay":   {Mode: ModeProxy, ServerIP: serverIP, HTTPBase: httpBase, Booter: b, Relays: []netip.Prefix{{}}},
	} {
		if _, err := NewDHCPHandler(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
