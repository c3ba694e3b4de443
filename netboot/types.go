// Package netboot answers everything a machine's firmware asks before an
// operating system runs: DHCPv4 (reservations or proxyDHCP), TFTP for the
// iPXE binaries, and HTTP for iPXE scripts, kernels and initrds.
//
// The package keeps protocol apart from decisions, like pixiecore does:
// what a MAC boots comes from a Booter, which address it gets comes from
// Addresses, and what happened is reported to a Recorder. netboot imports
// no other metalhall package; the service wires adapters to these small
// interfaces.
package netboot

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Arch is the client system architecture of DHCP option 93 (RFC 4578,
// IANA "Processor Architecture Types").
type Arch uint16

// The architectures netboot has a boot file for.
const (
	ArchBIOS         Arch = 0  // x86 BIOS (legacy PXE)
	ArchEFIx64       Arch = 7  // x86-64 UEFI
	ArchEFIBC        Arch = 9  // x86-64 UEFI (EFI BC, what many firmwares send for x64)
	ArchEFIARM64     Arch = 11 // arm64 UEFI
	ArchEFIx64HTTP   Arch = 16 // x86-64 UEFI HTTP boot
	ArchEFIARM64HTTP Arch = 19 // arm64 UEFI HTTP boot
	// ArchUnknown marks a request without option 93.
	ArchUnknown Arch = 0xffff
)

// Client is what netboot knows about the machine asking. The same shape
// is passed for DHCP and HTTP requests; fields a protocol does not carry
// are zero.
type Client struct {
	MAC         net.HardwareAddr
	Arch        Arch       // option 93 (first entry); ArchUnknown if absent
	UserClass   string     // option 77, "iPXE" once iPXE runs
	VendorClass string     // option 60, e.g. "PXEClient:Arch:00007:UNDI:003016" or "HTTPClient:..."
	Relay       netip.Addr // giaddr of a relayed request; invalid when on-link
	IP          netip.Addr // ciaddr (DHCP) or source address (HTTP); invalid if unknown
}

// IsIPXE reports whether the client is already iPXE (option 77 "iPXE").
func (c Client) IsIPXE() bool { return c.UserClass == "iPXE" }

// BootKind is what a machine boots now.
type BootKind int

const (
	// BootNone: no network boot. The firmware gets a plain lease
	// (reservation mode) or silence (proxy mode) and moves on.
	BootNone BootKind = iota
	// BootDiscovery boots the discovery/inspection environment.
	BootDiscovery
	// BootProvision boots a kernel and initrd (the agent) to provision.
	BootProvision
	// BootLocal chains into iPXE, whose script leaves for the local disk
	// (exit on UEFI, sanboot 0x80 on BIOS). For machines whose boot order
	// is pinned to the network.
	BootLocal
)

func (k BootKind) String() string {
	switch k {
	case BootNone:
		return "none"
	case BootDiscovery:
		return "discovery"
	case BootProvision:
		return "provision"
	case BootLocal:
		return "local"
	}
	return fmt.Sprintf("BootKind(%d)", int(k))
}

// Boot is a Booter's answer.
type Boot struct {
	Kind    BootKind
	Kernel  string   // absolute URL of the kernel (discovery, provision)
	Initrds []string // absolute URLs of the initrds, in order
	Cmdline string   // kernel command line, without initrd= (netboot adds it)
	// Script, when set, is served verbatim as the iPXE script instead of
	// rendering the template for Kind.
	Script string
	// Machine is the Booter's name for the machine, when it knows it.
	// netboot carries it into the events of this boot, so the recorder
	// never has to look the MAC up again.
	Machine string
}

// Netboots reports whether the client should get boot options at all.
func (b Boot) Netboots() bool { return b.Kind != BootNone }

// Booter decides what a machine boots. It is called on the DHCP hot path:
// answer from memory, quickly, and honour ctx.
type Booter interface {
	// Boot returns what c boots now. An unknown MAC is not an error:
	// return Boot{Kind: BootNone}.
	Boot(ctx context.Context, c Client) (Boot, error)
}

// BooterFunc adapts a function to Booter.
type BooterFunc func(ctx context.Context, c Client) (Boot, error)

// Boot calls f.
func (f BooterFunc) Boot(ctx context.Context, c Client) (Boot, error) { return f(ctx, c) }

// Subnet is the addressing of one L2 segment.
type Subnet struct {
	Prefix    netip.Prefix // e.g. 10.1.7.0/24
	Gateway   netip.Addr   // option 3; invalid: none
	DNS       []netip.Addr // option 6
	Domain    string       // option 15
	LeaseTime time.Duration
}

// Reservation is the address a MAC gets.
type Reservation struct {
	IP       netip.Addr
	Subnet   Subnet
	Hostname string // option 12; empty: none
	Dynamic  bool   // allocated from a dynamic range, not reserved
}

// Addresses owns IP address assignment. Like Booter it is called on the
// DHCP hot path.
type Addresses interface {
	// Lookup returns the reservation of mac on the segment reached through
	// relay (invalid relay: the server's own segment). ok is false for an
	// unknown MAC.
	Lookup(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (r Reservation, ok bool, err error)
	// Allocate gives an unknown MAC an address from the dynamic range of
	// the segment reached through relay. Only called with discovery on. It
	// returns the same address again for the same MAC while the lease lasts.
	Allocate(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (Reservation, error)
	// Owner returns the MAC that holds ip (reserved or leased), so the HTTP
	// handler can tell whether a script request comes from its machine.
	Owner(ctx context.Context, ip netip.Addr) (net.HardwareAddr, bool)
}

// BootAddresses is implemented by Addresses that also decide what a MAC
// boots, from the same lookup: one read of the backend per packet, like
// smee's GetByMac. When DHCPConfig.Addresses implements it, the DHCP
// handler calls LookupBoot instead of Addresses.Lookup and Booter.Boot;
// it must answer as those two would.
type BootAddresses interface {
	Addresses
	// LookupBoot returns the reservation of c.MAC on the segment reached
	// through c.Relay (ok false for an unknown MAC, as Lookup) and what
	// c boots (as Booter.Boot).
	LookupBoot(ctx context.Context, c Client) (r Reservation, ok bool, b Boot, err error)
}

// SegmentKnower is implemented by Addresses that can tell, before
// allocating, whether a relay's giaddr lies on a segment they serve: a
// relayed DISCOVER from an unknown MAC is then answered without the relay
// being configured by hand, as a reserved MAC's is.
type SegmentKnower interface {
	RelayKnown(relay netip.Addr) bool
}

// LeaseLearner is implemented by Addresses that take what proxy mode
// learns. In proxy mode another server hands out addresses; the PXE
// client's REQUEST to that server (port 67, option 50) and its
// boot-server REQUEST (port 4011, ciaddr) say which address it takes.
// Learning it lets Owner, and so the HTTP handler, match the client's
// script request by source address. Like the source-address check itself,
// this trusts the L2 segment.
type LeaseLearner interface {
	Learn(ctx context.Context, mac net.HardwareAddr, ip netip.Addr)
}

// Step names a boot step in an Event.
type Step string

// The steps netboot records.
const (
	StepDHCPOffer Step = "dhcp-offer"
	StepDHCPAck   Step = "dhcp-ack"
	StepDHCPNak   Step = "dhcp-nak"
	StepTFTP      Step = "tftp"
	StepScript    Step = "script"
	StepKernel    Step = "kernel"
	StepInitrd    Step = "initrd"
	StepFile      Step = "file" // another HTTP file (iPXE binary, artefact not in the Boot)
)

// Event is one boot step of one machine.
type Event struct {
	Time time.Time
	MAC  string // canonical aa:bb:cc:dd:ee:ff; empty when not known (TFTP)
	// Machine is the Booter's name for the MAC (Boot.Machine) when netboot
	// learnt it on the way; empty when not known.
	Machine string
	Step    Step
	Detail  string
}

// Lease is an address handed out, for persistence.
type Lease struct {
	MAC      string
	IP       netip.Addr
	Hostname string
	Expires  time.Time
}

// Recorder receives boot events and leases. Both methods are called on
// the hot path and must not block: buffer, drop and count (see
// AsyncRecorder), never write a database per packet.
type Recorder interface {
	Event(Event)
	Lease(Lease)
}

// NopRecorder drops everything.
type NopRecorder struct{}

func (NopRecorder) Event(Event) {}
func (NopRecorder) Lease(Lease) {}
