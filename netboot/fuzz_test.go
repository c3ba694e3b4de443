package netboot

import (
	"context"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzHandleDHCP feeds arbitrary bytes to the handler in both modes and
// on both ports. It must never panic, and a reply must stay a sane size.
//
//	go test ./netboot -run '^$' -fuzz FuzzHandleDHCP -fuzztime 10s
func FuzzHandleDHCP(f *testing.F) {
	for _, p := range []pkt{
		{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.INTEL_X86PC), vendor: "PXEClient:Arch:00000:UNDI:002001"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007", user: "iPXE"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64_HTTP), vendor: "HTTPClient:Arch:00016"},
		{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.10", serverID: "10.99.0.1", vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeRequest, mac: macKnown, ciaddr: "10.99.0.10"},
		{mt: dhcpv4.MessageTypeInform, mac: macKnown, ciaddr: "10.99.0.10"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, giaddr: "10.98.0.1", arch: archp(iana.EFI_ARM64), vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, arch: archp(iana.EFI_BC), vendor: "PXEClient"},
		{mt: dhcpv4.MessageTypeRelease, mac: macKnown, ciaddr: "10.99.0.10"},
	} {
		f.Add(p.build(f), uint16(67))
		f.Add(p.build(f), uint16(4011))
	}
	f.Add([]byte{}, uint16(67))
	f.Add([]byte{1, 1, 6, 0}, uint16(67))

	fx := newFixture(f)
	fx.booter.SetDiscovery(&Boot{Kind: BootDiscovery, Kernel: httpBase + "/boot/files/vmlinuz"})
	fx.rec = nil
	var hs []*DHCPHandler
	for _, mode := range []Mode{ModeReservation, ModeProxy} {
		for _, disc := range []bool{false, true} {
			h, err := NewDHCPHandler(DHCPConfig{Mode: mode, ServerIP: serverIP, HTTPBase: httpBase, Discovery: disc,
				Booter: fx.booter, Addresses: fx.addrs})
			if err != nil {
				f.Fatal(err)
			}
			hs = append(hs, h)
		}
	}
	from := netip.MustParseAddrPort("10.99.0.50:68")
	f.Fuzz(func(t *testing.T, data []byte, port uint16) {
		for _, h := range hs {
			rep, _ := h.Handle(context.Background(), data, from, port)
			if rep == nil {
				continue
			}
			b := rep.Packet.ToBytes()
			if len(b) > 1500 {
				t.Fatalf("reply of %d bytes", len(b))
			}
			if _, err := dhcpv4.FromBytes(b); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if rep.Packet.OpCode != dhcpv4.OpcodeBootReply || rep.Packet.ServerIdentifier() == nil {
				t.Fatalf("bad reply: %s", rep.Packet.Summary())
			}
		}
	})
}
