package netboot

import (
	"encoding/binary"
	"math/bits"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// The reply's encoding, without an allocation per option.
//
// Every DHCP packet is answered on the hot path of a boot storm, and the
// library's way of building a reply allocated ~50 times per packet: an
// encoder per option value (UpdateOption), a growing options map, a
// growing key slice and output buffer in ToBytes. The GC that pays that
// back runs on the same two cores as the answers (bench/dhcp). Here the
// reply is still a dhcpv4.DHCPv4 built field by field with the library's
// option codes; only the bytes of its option values come from one
// per-packet arena, and it is serialised into a buffer the worker reuses.
// TestRepliesOnTheWireAreUnchanged and the fuzz target hold both to what
// the library itself produces.

// optionArena hands out the value bytes of one reply's options from one
// allocation. Each value is capped at its length, so that nothing
// appending to one can run into the next.
type optionArena []byte

// take returns n bytes for one option value.
func (a *optionArena) take(n int) []byte {
	if cap(*a)-len(*a) < n {
		*a = make([]byte, 0, max(n, 128))
	}
	l := len(*a)
	*a = (*a)[:l+n]
	return (*a)[l : l+n : l+n]
}

// putIPs sets option code to the addresses as dhcpv4.IPs encodes them:
// 4 bytes each, and nothing for one that is not IPv4 (net.IP.To4 is nil).
func (a *optionArena) putIPs(o dhcpv4.Options, code dhcpv4.OptionCode, addrs ...netip.Addr) {
	n := 0
	for _, ip := range addrs {
		if ip.Unmap().Is4() {
			n += 4
		}
	}
	v := a.take(n)[:0]
	for _, ip := range addrs {
		if ip = ip.Unmap(); ip.Is4() {
			b := ip.As4()
			v = append(v, b[:]...)
		}
	}
	o[code.Code()] = v
}

// putString sets option code to s (dhcpv4.String).
func (a *optionArena) putString(o dhcpv4.Options, code dhcpv4.OptionCode, s string) {
	v := a.take(len(s))
	copy(v, s)
	o[code.Code()] = v
}

// putDuration sets option code to d in whole seconds, 32 bits big-endian
// (dhcpv4.Duration).
func (a *optionArena) putDuration(o dhcpv4.Options, code dhcpv4.OptionCode, d time.Duration) {
	v := a.take(4)
	binary.BigEndian.PutUint32(v, uint32(d/time.Second))
	o[code.Code()] = v
}

// putMask sets the subnet mask option for a prefix of the given length,
// as dhcpv4.OptSubnetMask(net.CIDRMask(bits, 32)) does: empty for a
// length that is no IPv4 prefix length.
func (a *optionArena) putMask(o dhcpv4.Options, prefixBits int) {
	if prefixBits < 0 || prefixBits > 32 {
		o[dhcpv4.OptionSubnetMask.Code()] = a.take(0)
		return
	}
	v := a.take(4)
	binary.BigEndian.PutUint32(v, ^uint32(0)<<(32-prefixBits)) // a shift by 32 is 0 in Go
	o[dhcpv4.OptionSubnetMask.Code()] = v
}

// The message types a reply can carry, as option 53's value. Shared by
// every reply: nothing writes into an option's value once it is set.
var (
	msgTypeOffer = []byte{byte(dhcpv4.MessageTypeOffer)}
	msgTypeAck   = []byte{byte(dhcpv4.MessageTypeAck)}
	msgTypeNak   = []byte{byte(dhcpv4.MessageTypeNak)}
)

// msgTypeValue returns option 53's value for a reply of type t.
func msgTypeValue(t dhcpv4.MessageType) []byte {
	switch t {
	case dhcpv4.MessageTypeOffer:
		return msgTypeOffer
	case dhcpv4.MessageTypeAck:
		return msgTypeAck
	case dhcpv4.MessageTypeNak:
		return msgTypeNak
	}
	return []byte{byte(t)}
}

// messageType is req.MessageType() without its decoder's allocation: the
// option's one byte, or MessageTypeNone when it is absent or not one
// byte long.
func messageType(o dhcpv4.Options) dhcpv4.MessageType {
	if v := o.Get(dhcpv4.OptionDHCPMessageType); len(v) == 1 {
		return dhcpv4.MessageType(v[0])
	}
	return dhcpv4.MessageTypeNone
}

// optionIP4 is dhcpv4.GetIP without its allocations: the option's address
// when it is exactly 4 bytes long (0.0.0.0 included), else false.
func optionIP4(o dhcpv4.Options, code dhcpv4.OptionCode) (netip.Addr, bool) {
	v := o.Get(code)
	if len(v) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v)), true
}

// clientArch is the first architecture of req.ClientArch() without its
// decoder's allocations: option 93 is a list of 16-bit types, and the
// library takes it only when it is whole (an even, non-zero length).
func clientArch(o dhcpv4.Options) (Arch, bool) {
	v := o.Get(dhcpv4.OptionClientSystemArchitectureType)
	if len(v) < 2 || len(v)%2 != 0 {
		return 0, false
	}
	return Arch(binary.BigEndian.Uint16(v)), true
}

// bootpMinLen is the shortest packet dhcpv4.ToBytes writes (RFC 951's
// BOOTP message, padded).
const bootpMinLen = 300

// dhcpMagicCookie starts the options (RFC 2131 section 3).
var dhcpMagicCookie = [4]byte{99, 130, 83, 99}

// appendPacket appends p as (*dhcpv4.DHCPv4).ToBytes encodes it, byte for
// byte: the fixed BOOTP fields, the magic cookie, the options in
// ascending code order with the relay agent information (82) last and
// values over 255 bytes split into several instances (RFC 3396), End,
// and padding to 300 bytes.
func appendPacket(b []byte, p *dhcpv4.DHCPv4) []byte {
	start := len(b)
	b = append(b, byte(p.OpCode), byte(p.HWType), byte(len(p.ClientHWAddr)), p.HopCount)
	b = append(b, p.TransactionID[:]...)
	b = binary.BigEndian.AppendUint16(b, p.NumSeconds)
	b = binary.BigEndian.AppendUint16(b, p.Flags)
	for _, ip := range []net.IP{p.ClientIPAddr, p.YourIPAddr, p.ServerIPAddr, p.GatewayIPAddr} {
		var a [4]byte
		copy(a[:], ip.To4())
		b = append(b, a[:]...)
	}
	b = appendField(b, p.ClientHWAddr, 16, 16)
	b = appendField(b, []byte(p.ServerHostName), 64, 63)
	b = appendField(b, []byte(p.BootFileName), 128, 127)
	b = append(b, dhcpMagicCookie[:]...)

	// The codes present, in order, without sorting a slice.
	var present [4]uint64
	for code := range p.Options {
		present[code/64] |= 1 << (code % 64)
	}
	const agentInfo = 82
	end := dhcpv4.OptionEnd.Code()
	for w, word := range present {
		for word != 0 {
			code := uint8(w*64 + bits.TrailingZeros64(word))
			word &= word - 1
			if code == dhcpv4.OptionPad.Code() || code == end || code == agentInfo {
				continue
			}
			b = appendOption(b, code, p.Options[code])
		}
	}
	if v, ok := p.Options[agentInfo]; ok {
		b = appendOption(b, agentInfo, v)
	}
	b = append(b, end)
	if n := bootpMinLen - (len(b) - start); n > 0 {
		b = append(b, make([]byte, n)...) // zeroes, without an allocation
	}
	return b
}

// appendField appends a fixed-size field of size bytes holding at most
// limit bytes of v, zero-filled.
func appendField(b, v []byte, size, limit int) []byte {
	n := min(len(v), limit)
	b = append(b, v[:n]...)
	return append(b, make([]byte, size-n)...)
}

// appendOption appends one option; an empty value is written with length
// 0, a long one as several instances of at most 255 bytes (RFC 3396).
func appendOption(b []byte, code uint8, v []byte) []byte {
	if len(v) == 0 {
		return append(b, code, 0)
	}
	for len(v) > 0 {
		n := min(len(v), 255)
		b = append(b, code, byte(n))
		b = append(b, v[:n]...)
		v = v[n:]
	}
	return b
}
