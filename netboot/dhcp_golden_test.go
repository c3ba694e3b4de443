package netboot

import (
	"bytes"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/replies.golden from what the handler answers now")

// TestRepliesOnTheWireAreUnchanged answers a fixed set of requests, in
// every mode, and compares each reply's bytes on the wire, its
// destination and what was recorded with testdata/replies.golden, which
// was written by the handler before its replies were built without the
// library's per-option encoders and serialised into reused buffers: a
// faster answer must be the same answer.
func TestRepliesOnTheWireAreUnchanged(t *testing.T) {
	long82 := bytes.Repeat([]byte{1, 8, 'c', 'i', 'r', 'c', 'u', 'i', 't', '7'}, 30) // 300 bytes: two option 82 instances on the wire
	reqs := []struct {
		name  string
		p     pkt
		extra []dhcpv4.Option
	}{
		{"discover-bios", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.INTEL_X86PC), vendor: "PXEClient:Arch:00000:UNDI:002001"}, nil},
		{"discover-efi-broadcast", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007:UNDI:003016", broadcast: true}, nil},
		{"discover-ipxe", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64), vendor: "PXEClient:Arch:00007", user: "iPXE"}, nil},
		{"discover-http", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_X86_64_HTTP), vendor: "HTTPClient:Arch:00016"}, nil},
		{"discover-arm64-http", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, arch: archp(iana.EFI_ARM64_HTTP), vendor: "HTTPClient:Arch:00019"}, nil},
		{"discover-os-client", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, vendor: "udhcp 1.36.1"}, nil},
		{"discover-client-id", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macKnown, vendor: "PXEClient"}, []dhcpv4.Option{dhcpv4.OptClientIdentifier([]byte{1, 0x52, 0x54, 0, 0x12, 0x34, 0x56})}},
		{"discover-no-boot", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macNoBoot, arch: archp(iana.INTEL_X86PC), vendor: "PXEClient"}, nil},
		{"discover-unknown", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, arch: archp(iana.EFI_BC), vendor: "PXEClient"}, nil},
		{"discover-relayed", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, giaddr: "10.98.0.1", arch: archp(iana.EFI_ARM64), vendor: "PXEClient"}, nil},
		{"discover-relayed-long-82", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, giaddr: "10.98.0.1", vendor: "PXEClient"}, []dhcpv4.Option{dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, long82)}},
		{"discover-configured-relay", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macRelayed, giaddr: "10.66.0.1", vendor: "PXEClient"}, nil},
		{"discover-unknown-relay", pkt{mt: dhcpv4.MessageTypeDiscover, mac: macUnknown, giaddr: "10.77.0.1", vendor: "PXEClient"}, nil},
		{"request", pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.10", serverID: "10.99.0.1", arch: archp(iana.INTEL_X86PC), vendor: "PXEClient"}, nil},
		{"request-no-server-id", pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.10", vendor: "PXEClient", user: "iPXE"}, nil},
		{"request-wrong-address", pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.77"}, nil},
		{"request-other-server", pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "10.99.0.10", serverID: "10.99.0.2"}, nil},
		{"request-unspecified", pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, requested: "0.0.0.0", ciaddr: "10.99.0.10"}, nil},
		{"renewal", pkt{mt: dhcpv4.MessageTypeRequest, mac: macKnown, ciaddr: "10.99.0.10"}, nil},
		{"request-unknown", pkt{mt: dhcpv4.MessageTypeRequest, mac: macUnknown, requested: "10.99.0.100", serverID: "10.99.0.1", vendor: "PXEClient"}, nil},
		{"request-relayed", pkt{mt: dhcpv4.MessageTypeRequest, mac: macRelayed, giaddr: "10.98.0.1", requested: "10.98.0.20", vendor: "PXEClient"}, nil},
		{"inform", pkt{mt: dhcpv4.MessageTypeInform, mac: macKnown, ciaddr: "10.99.0.10", vendor: "PXEClient"}, nil},
		{"release", pkt{mt: dhcpv4.MessageTypeRelease, mac: macKnown, ciaddr: "10.99.0.10"}, nil},
	}
	var out strings.Builder
	for _, mode := range []Mode{ModeReservation, ModeProxy} {
		for _, disc := range []bool{false, true} {
			for _, port := range []uint16{dhcpv4.ServerPort, proxyPort} {
				for i, r := range reqs {
					f := newFixture(t)
					f.booter.SetDiscovery(&Boot{Kind: BootDiscovery, Kernel: httpBase + "/boot/files/vmlinuz"})
					h, err := NewDHCPHandler(DHCPConfig{Mode: mode, ServerIP: serverIP, HTTPBase: httpBase, Discovery: disc,
						Relays: fuzzRelays, Booter: f.booter, Addresses: f.addrs, Recorder: f.rec, Logger: slog.New(slog.DiscardHandler)})
					if err != nil {
						t.Fatal(err)
					}
					// The same transaction ID every run (dhcpv4.New draws one).
					d, err := dhcpv4.FromBytes(r.p.build(t))
					if err != nil {
						t.Fatal(err)
					}
					d.TransactionID = dhcpv4.TransactionID{0x6d, 0x68, byte(i), byte(port)}
					d.NumSeconds = 3
					for _, o := range r.extra {
						d.UpdateOption(o)
					}
					req := d.ToBytes()
					fmt.Fprintf(&out, "%v disc=%v port=%d %s:", mode, disc, port, r.name)
					rep, why := h.Handle(context.Background(), req, netip.MustParseAddrPort("10.99.0.50:68"), port)
					if rep == nil {
						fmt.Fprintf(&out, " drop %v\n", why)
						continue
					}
					fmt.Fprintf(&out, " dest=%d %v\n  %s\n", rep.Dest.Kind, rep.Dest.Addr, hex.EncodeToString(wireBytes(t, rep.Packet)))
					for _, e := range f.rec.Events() {
						fmt.Fprintf(&out, "  event %s %s %v %q\n", e.MAC, e.Machine, e.Step, e.Detail)
					}
					for _, l := range f.rec.Leases() {
						fmt.Fprintf(&out, "  lease %s %v %q\n", l.MAC, l.IP, l.Hostname)
					}
				}
			}
		}
	}
	golden := filepath.Join("testdata", "replies.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("line %d differs from %s:\n got %s\nwant %s", i+1, golden, gl[i], wl[i])
			}
		}
		t.Fatalf("%d lines, %s has %d", len(gl), golden, len(wl))
	}
}

// wireBytes is what the server sends for p, checked against the
// library's own encoding of it.
func wireBytes(t *testing.T, p *dhcpv4.DHCPv4) []byte {
	t.Helper()
	b := appendPacket(nil, p)
	if lib := p.ToBytes(); !bytes.Equal(b, lib) {
		t.Fatalf("appendPacket and ToBytes differ:\n%x\n%x", b, lib)
	}
	return b
}

// TestAppendPacketIsTheLibrarysEncoding holds the server's encoder to
// dhcpv4's ToBytes where replies differ from the golden set: fields at and
// past their size, empty and long options, Pad and End in the options,
// odd hardware address lengths, absent addresses.
func TestAppendPacketIsTheLibrarysEncoding(t *testing.T) {
	long := bytes.Repeat([]byte("0123456789"), 60) // 600 bytes: three instances
	cases := map[string]func(p *dhcpv4.DHCPv4){
		"plain":        func(p *dhcpv4.DHCPv4) {},
		"file 127":     func(p *dhcpv4.DHCPv4) { p.BootFileName = strings.Repeat("f", 127) },
		"file 128":     func(p *dhcpv4.DHCPv4) { p.BootFileName = strings.Repeat("f", 128) },
		"file 300":     func(p *dhcpv4.DHCPv4) { p.BootFileName = strings.Repeat("f", 300) },
		"sname 63":     func(p *dhcpv4.DHCPv4) { p.ServerHostName = strings.Repeat("s", 63) },
		"sname 64":     func(p *dhcpv4.DHCPv4) { p.ServerHostName = strings.Repeat("s", 64) },
		"sname 100":    func(p *dhcpv4.DHCPv4) { p.ServerHostName = strings.Repeat("s", 100) },
		"empty option": func(p *dhcpv4.DHCPv4) { p.Options[200] = []byte{} },
		"nil option":   func(p *dhcpv4.DHCPv4) { p.Options[201] = nil },
		"pad and end":  func(p *dhcpv4.DHCPv4) { p.Options[0] = []byte{1}; p.Options[255] = []byte{2} },
		"long option":  func(p *dhcpv4.DHCPv4) { p.Options[43] = long },
		"255 bytes":    func(p *dhcpv4.DHCPv4) { p.Options[43] = long[:255] },
		"256 bytes":    func(p *dhcpv4.DHCPv4) { p.Options[43] = long[:256] },
		"long 82 among others": func(p *dhcpv4.DHCPv4) {
			p.Options[82] = long
			p.Options[81] = []byte{1}
			p.Options[83] = []byte{2}
			p.Options[254] = []byte{3}
			p.Options[1] = []byte{255, 255, 255, 0}
			p.Options[64] = []byte{4}
			p.Options[128] = []byte{5}
		},
		"every code": func(p *dhcpv4.DHCPv4) {
			for c := range 256 {
				p.Options[uint8(c)] = []byte{byte(c)}
			}
		},
		"hwaddr 0":  func(p *dhcpv4.DHCPv4) { p.ClientHWAddr = nil },
		"hwaddr 16": func(p *dhcpv4.DHCPv4) { p.ClientHWAddr = bytes.Repeat([]byte{0xab}, 16) },
		"no addrs": func(p *dhcpv4.DHCPv4) {
			p.ClientIPAddr, p.YourIPAddr, p.ServerIPAddr, p.GatewayIPAddr = nil, nil, nil, nil
		},
		"16-byte IP": func(p *dhcpv4.DHCPv4) { p.YourIPAddr = netip.MustParseAddr("::ffff:10.1.2.3").AsSlice() },
		"fields": func(p *dhcpv4.DHCPv4) {
			p.HopCount, p.NumSeconds, p.Flags = 3, 0xbeef, 0x8001
			p.TransactionID = dhcpv4.TransactionID{1, 2, 3, 4}
		},
	}
	for name, mod := range cases {
		p, err := dhcpv4.New(dhcpv4.WithHwAddr(macKnown), dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))
		if err != nil {
			t.Fatal(err)
		}
		mod(p)
		if got, lib := appendPacket(nil, p), p.ToBytes(); !bytes.Equal(got, lib) {
			t.Errorf("%s:\n got %x\nwant %x", name, got, lib)
		}
		// Into a buffer that already holds something, as a worker's does.
		if got, lib := appendPacket(make([]byte, 7, 9), p), p.ToBytes(); !bytes.Equal(got[7:], lib) {
			t.Errorf("%s, appended: got %x", name, got[7:])
		}
	}
}
