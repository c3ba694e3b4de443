package netboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Mode is how the DHCP server takes part.
type Mode int

const (
	// ModeOff runs no DHCP: another server hands out addresses and boot
	// options pointing at netboot's TFTP/HTTP.
	ModeOff Mode = iota
	// ModeReservation hands out addresses (reservations, plus a dynamic
	// range with discovery) and boot options.
	ModeReservation
	// ModeProxy answers PXE clients with boot options only (proxyDHCP, ports
	// 67 and 4011); another server hands out addresses.
	ModeProxy
)

func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeReservation:
		return "reservation"
	case ModeProxy:
		return "proxy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "off", "reservation" or "proxy".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "off":
		return ModeOff, nil
	case "reservation":
		return ModeReservation, nil
	case "proxy":
		return ModeProxy, nil
	}
	return 0, fmt.Errorf("DHCP mode %q: want off, reservation or proxy", s)
}

// BootFiles names the iPXE binaries handed to firmware, relative to the
// TFTP root (and to /ipxe/ over HTTP).
type BootFiles struct {
	BIOS   string // arch 0, default undionly.kpxe
	EFIx64 string // arch 7 and 9, default ipxe.efi
	ARM64  string // arch 11, default snp.efi
}

func (b BootFiles) withDefaults() BootFiles {
	if b.BIOS == "" {
		b.BIOS = "undionly.kpxe"
	}
	if b.EFIx64 == "" {
		b.EFIx64 = "ipxe.efi"
	}
	if b.ARM64 == "" {
		b.ARM64 = "snp.efi"
	}
	return b
}

// DHCPConfig configures a DHCPHandler.
type DHCPConfig struct {
	Mode      Mode
	ServerIP  netip.Addr // advertised: option 54, siaddr, option 66
	HTTPBase  string     // e.g. "http://10.1.0.1:8080", no trailing slash
	Discovery bool       // unknown MACs get a dynamic address and the Booter's answer
	BootFiles BootFiles

	// Ports replies go to; 67 and 68 unless set (tests use others).
	ServerPort, ClientPort uint16

	// Relays lists the relay agents (addresses as /32, or prefixes) whose
	// giaddr is accepted besides those inside the subnet of the address
	// the request resolves to (a relay's giaddr is its address on the
	// client's segment). A relayed request from any other giaddr is
	// dropped and counted: its reply would go to whatever address the
	// sender wrote there.
	Relays []netip.Prefix

	Booter    Booter
	Addresses Addresses // required in ModeReservation; optional in ModeProxy
	Recorder  Recorder
	Logger    *slog.Logger
}

// DropReason says why a packet got no reply.
type DropReason int

// The drop reasons, exported as the label of a counter.
const (
	DropMalformed    DropReason = iota // not a parseable BOOTREQUEST from an Ethernet client
	DropMessageType                    // a type we do not answer (RELEASE, DECLINE, or on the wrong port)
	DropOtherServer                    // REQUEST addressed to another server (option 54)
	DropUnknownMAC                     // MAC with no reservation, discovery off
	DropNoBoot                         // proxy mode: client not PXE, or the Booter says no network boot
	DropBooter                         // the Booter failed
	DropAddresses                      // Addresses failed (e.g. range exhausted)
	DropQueueFull                      // worker queue full
	DropSend                           // writing the reply failed
	DropUnknownRelay                   // giaddr is neither a configured relay nor on a known segment
	numDropReasons
)

var dropNames = [numDropReasons]string{"malformed", "message_type", "other_server", "unknown_mac", "no_boot", "booter_error", "addresses_error", "queue_full", "send_error", "unknown_relay"}

func (r DropReason) String() string {
	if r >= 0 && r < numDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", int(r))
}

// DHCPStats are the DHCP counters, for Prometheus.
type DHCPStats struct {
	Received uint64
	Replied  uint64            // replies built; a failed send also counts as dropped send_error
	Dropped  map[string]uint64 // by DropReason.String()
}

type dhcpCounters struct {
	received, replied atomic.Uint64
	dropped           [numDropReasons]atomic.Uint64
}

func (c *dhcpCounters) snapshot() DHCPStats {
	s := DHCPStats{Received: c.received.Load(), Replied: c.replied.Load(), Dropped: make(map[string]uint64, numDropReasons)}
	for i := range c.dropped {
		s.Dropped[DropReason(i).String()] = c.dropped[i].Load()
	}
	return s
}

// DestKind says how a reply travels.
type DestKind int

const (
	DestRelay     DestKind = iota // unicast to the relay, server port
	DestUnicast                   // unicast to a client that has its address (ciaddr)
	DestBroadcast                 // limited broadcast, client port
	// DestHardware is unicast to yiaddr at the client's MAC. Without a raw
	// socket the kernel would ARP for an address the client does not hold
	// yet, so the sender broadcasts instead (allowed by RFC 2131 4.1).
	DestHardware
)

// Destination is where a reply goes.
type Destination struct {
	Kind DestKind
	Addr netip.AddrPort
}

// Reply is a packet to send and where.
type Reply struct {
	Packet *dhcpv4.DHCPv4
	Dest   Destination

	state *replyState // what recycle returns to the handler's pool
}

// replyState is one reply, its packet and the storage of its option
// values, taken from the handler's pool and given back by the server
// once the reply is sent (recycle): the options map and the arena are
// then allocated once per worker, not per packet. A reply that is not
// recycled (a test's, say) is left to the GC like any other value.
type replyState struct {
	reply Reply
	pkt   dhcpv4.DHCPv4
	arena optionArena
	store [256]byte // the arena's storage: a reply's values fit with room to spare
}

// DHCPHandler turns requests into replies. It holds no socket: the
// server's workers (or a test) feed it packets.
type DHCPHandler struct {
	cfg   DHCPConfig
	log   *slog.Logger
	sid   net.IP // option 54 / siaddr, 4 bytes; also option 54's value in every reply
	tftp  []byte // option 66's value: the server's address as text
	stats dhcpCounters

	replies sync.Pool // of *replyState
}

// NewDHCPHandler checks cfg and returns a handler.
func NewDHCPHandler(cfg DHCPConfig) (*DHCPHandler, error) {
	if cfg.Mode != ModeReservation && cfg.Mode != ModeProxy {
		return nil, fmt.Errorf("DHCP handler: mode %v serves nothing", cfg.Mode)
	}
	if !cfg.ServerIP.Is4() || cfg.ServerIP.IsUnspecified() {
		return nil, fmt.Errorf("DHCP handler: server IP %v must be a specific IPv4 address", cfg.ServerIP)
	}
	if cfg.Booter == nil {
		return nil, errors.New("DHCP handler: a Booter is required")
	}
	if cfg.Mode == ModeReservation && cfg.Addresses == nil {
		return nil, errors.New("DHCP handler: reservation mode needs Addresses")
	}
	if cfg.HTTPBase == "" {
		return nil, errors.New("DHCP handler: HTTP base URL required (iPXE fetches its script from it)")
	}
	for _, p := range cfg.Relays {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("DHCP handler: relay %v: want an IPv4 address or prefix", p)
		}
	}
	cfg.HTTPBase = strings.TrimRight(cfg.HTTPBase, "/")
	cfg.BootFiles = cfg.BootFiles.withDefaults()
	if cfg.ServerPort == 0 {
		cfg.ServerPort = dhcpv4.ServerPort
	}
	if cfg.ClientPort == 0 {
		cfg.ClientPort = dhcpv4.ClientPort
	}
	if cfg.Recorder == nil {
		cfg.Recorder = NopRecorder{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tftp := []byte(cfg.ServerIP.String())
	return &DHCPHandler{cfg: cfg, log: cfg.Logger, sid: net.IP(cfg.ServerIP.AsSlice()), tftp: tftp[:len(tftp):len(tftp)]}, nil
}

// Stats returns the counters.
func (h *DHCPHandler) Stats() DHCPStats { return h.stats.snapshot() }

func (h *DHCPHandler) drop(r DropReason) (*Reply, DropReason) {
	h.stats.dropped[r].Add(1)
	return nil, r
}

// proxyPort is the PXE boot server port of proxyDHCP.
const proxyPort = 4011

// Handle answers one packet that arrived from peer on localPort (67, or
// 4011 in proxy mode). It returns the reply, or nil and why not. It never
// panics on hostile input and does no I/O other than the Booter,
// Addresses and Recorder calls.
func (h *DHCPHandler) Handle(ctx context.Context, pkt []byte, peer netip.AddrPort, localPort uint16) (*Reply, DropReason) {
	h.stats.received.Add(1)
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return h.drop(DropMalformed)
	}
	c := clientOf(req)
	var rep *Reply
	var why DropReason
	switch h.cfg.Mode {
	case ModeReservation:
		rep, why = h.reservation(ctx, req, c, localPort)
	case ModeProxy:
		rep, why = h.proxy(ctx, req, c, peer, localPort)
	}
	if rep != nil {
		h.stats.replied.Add(1)
	}
	return rep, why
}

func clientOf(req *dhcpv4.DHCPv4) Client {
	c := Client{
		MAC:         req.ClientHWAddr,
		Arch:        ArchUnknown,
		VendorClass: req.ClassIdentifier(),
	}
	if a, ok := clientArch(req.Options); ok {
		c.Arch = a
	}
	if uc := req.UserClass(); len(uc) > 0 {
		c.UserClass = uc[0]
	}
	if a, ok := addr4(req.GatewayIPAddr); ok {
		c.Relay = a
	}
	if a, ok := addr4(req.ClientIPAddr); ok {
		c.IP = a
	}
	return c
}

// addr4 converts a packet address; ok is false for 0.0.0.0 and garbage.
func addr4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

// isPXE reports whether the client is network-boot firmware or iPXE
// (as opposed to an OS's DHCP client, which must never get boot options).
func isPXE(c Client) bool {
	return strings.HasPrefix(c.VendorClass, "PXEClient") || strings.HasPrefix(c.VendorClass, "HTTPClient") || c.IsIPXE()
}

func isHTTPClient(c Client) bool { return strings.HasPrefix(c.VendorClass, "HTTPClient") }

func (h *DHCPHandler) reservation(ctx context.Context, req *dhcpv4.DHCPv4, c Client, localPort uint16) (*Reply, DropReason) {
	mt := messageType(req.Options)
	switch mt {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
	default:
		return h.drop(DropMessageType)
	}
	if localPort == proxyPort {
		return h.drop(DropMessageType)
	}
	if mt == dhcpv4.MessageTypeRequest {
		// A REQUEST naming another server means the client took its offer.
		if sid, ok := optionIP4(req.Options, dhcpv4.OptionServerIdentifier); ok && sid != h.cfg.ServerIP {
			return h.drop(DropOtherServer)
		}
	}
	var (
		res            Reservation
		known, decided bool
		boot           Boot
		bootErr, err   error
	)
	if ba, ok := h.cfg.Addresses.(BootAddresses); ok {
		res, known, boot, bootErr = ba.LookupBoot(ctx, c)
		decided = true
	} else if res, known, err = h.cfg.Addresses.Lookup(ctx, c.MAC, c.Relay); err != nil {
		h.log.Warn("dhcp: address lookup failed", "mac", c.MAC.String(), "err", err)
		return h.drop(DropAddresses)
	}
	if !known {
		if !h.cfg.Discovery {
			return h.drop(DropUnknownMAC)
		}
		if !h.relayAccepted(c.Relay, nil) {
			return h.drop(DropUnknownRelay)
		}
		if res, err = h.cfg.Addresses.Allocate(ctx, c.MAC, c.Relay); err != nil {
			h.log.Warn("dhcp: no dynamic address for unknown MAC", "mac", c.MAC.String(), "relay", c.Relay, "err", err)
			return h.drop(DropAddresses)
		}
	}
	if !h.relayAccepted(c.Relay, &res) {
		return h.drop(DropUnknownRelay)
	}
	if !decided {
		boot, bootErr = h.cfg.Booter.Boot(ctx, c)
	}
	if bootErr != nil {
		// No reply rather than a plain lease: a plain lease would let the
		// firmware fall through to an old OS on disk. The client retries.
		h.log.Warn("dhcp: booter failed", "mac", c.MAC.String(), "err", bootErr)
		return h.drop(DropBooter)
	}

	step := StepDHCPOffer
	respType := dhcpv4.MessageTypeOffer
	switch mt {
	case dhcpv4.MessageTypeRequest:
		w, ok := optionIP4(req.Options, dhcpv4.OptionRequestedIPAddress)
		if !ok || w.IsUnspecified() {
			w, ok = addr4(req.ClientIPAddr)
		}
		if !ok || w != res.IP {
			want := req.RequestedIPAddress()
			if want == nil || want.IsUnspecified() {
				want = req.ClientIPAddr
			}
			nak := h.newReply(req, mt, dhcpv4.MessageTypeNak)
			h.cfg.Recorder.Event(Event{MAC: c.MAC.String(), Machine: boot.Machine, Step: StepDHCPNak, Detail: fmt.Sprintf("requested %v, reserved %v", want, res.IP)})
			nak.reply.Dest = h.destination(req, dhcpv4.MessageTypeNak, &nak.pkt)
			return &nak.reply, 0
		}
		respType, step = dhcpv4.MessageTypeAck, StepDHCPAck
	case dhcpv4.MessageTypeInform:
		// RFC 2131 3.4: no yiaddr and no lease time in the ACK to INFORM.
		respType, step = dhcpv4.MessageTypeAck, StepDHCPAck
	}
	st := h.newReply(req, mt, respType)
	resp := &st.pkt
	if mt != dhcpv4.MessageTypeInform {
		yi := st.arena.take(4)
		a := res.IP.As4()
		copy(yi, a[:])
		resp.YourIPAddr = net.IP(yi)
	}
	h.addSubnetOptions(resp, &st.arena, res, mt != dhcpv4.MessageTypeInform)
	file := ""
	if boot.Netboots() && isPXE(c) {
		file = h.addBootOptions(resp, &st.arena, c, false)
	}
	mac := c.MAC.String()
	if step == StepDHCPAck && mt == dhcpv4.MessageTypeRequest {
		h.cfg.Recorder.Lease(Lease{MAC: mac, IP: res.IP, Hostname: res.Hostname, Expires: time.Now().Add(leaseTime(res.Subnet))})
	}
	h.cfg.Recorder.Event(Event{MAC: mac, Machine: boot.Machine, Step: step, Detail: eventDetail(res.IP, c, boot, file)})
	st.reply.Dest = h.destination(req, respType, resp)
	return &st.reply, 0
}

// eventDetail is built for every packet: appends, not fmt, into a buffer
// on the stack, so that the string is the one allocation.
func eventDetail(ip netip.Addr, c Client, b Boot, file string) string {
	var buf [160]byte
	d := buf[:0]
	if ip.IsValid() {
		d = ip.AppendTo(append(d, "ip="...))
		d = append(d, ' ')
	}
	if c.Arch != ArchUnknown {
		d = strconv.AppendInt(append(d, "arch="...), int64(c.Arch), 10)
		d = append(d, ' ')
	}
	if c.Relay.IsValid() {
		d = c.Relay.AppendTo(append(d, "relay="...))
		d = append(d, ' ')
	}
	d = append(append(d, "boot="...), b.Kind.String()...)
	if file != "" {
		d = append(append(d, " file="...), file...)
	}
	return string(d)
}

func (h *DHCPHandler) proxy(ctx context.Context, req *dhcpv4.DHCPv4, c Client, peer netip.AddrPort, localPort uint16) (*Reply, DropReason) {
	mt := messageType(req.Options)
	var respType dhcpv4.MessageType
	switch {
	case localPort != proxyPort && mt == dhcpv4.MessageTypeDiscover:
		respType = dhcpv4.MessageTypeOffer
	case localPort == proxyPort && (mt == dhcpv4.MessageTypeRequest || mt == dhcpv4.MessageTypeInform):
		respType = dhcpv4.MessageTypeAck
	case localPort != proxyPort && mt == dhcpv4.MessageTypeRequest:
		// The REQUEST goes to the address server, not to us, but it says
		// which address the client takes (option 50, or ciaddr when
		// renewing). iPXE does not always send the 4011 REQUEST, so this is
		// where proxy mode learns who will fetch the script.
		if l, ok := h.cfg.Addresses.(LeaseLearner); ok && isPXE(c) {
			ip, ok := addr4(req.RequestedIPAddress())
			if !ok {
				ip, ok = c.IP, c.IP.IsValid()
			}
			if ok {
				l.Learn(ctx, c.MAC, ip)
			}
		}
		return h.drop(DropMessageType)
	default:
		return h.drop(DropMessageType)
	}
	if !isPXE(c) {
		return h.drop(DropNoBoot)
	}
	var (
		boot Boot
		err  error
		res  *Reservation // the address the request resolves to; nil: none
	)
	if ba, ok := h.cfg.Addresses.(BootAddresses); ok {
		r, known, b, berr := ba.LookupBoot(ctx, c)
		boot, err = b, berr
		if known {
			res = &r
		} else if !h.cfg.Discovery {
			return h.drop(DropUnknownMAC)
		}
	} else {
		if h.cfg.Addresses != nil && (!h.cfg.Discovery || c.Relay.IsValid()) {
			r, known, lerr := h.cfg.Addresses.Lookup(ctx, c.MAC, c.Relay)
			switch {
			case lerr != nil:
				return h.drop(DropAddresses)
			case known:
				res = &r
			case !h.cfg.Discovery:
				return h.drop(DropUnknownMAC)
			}
		}
		boot, err = h.cfg.Booter.Boot(ctx, c)
	}
	if !h.relayAccepted(c.Relay, res) {
		return h.drop(DropUnknownRelay)
	}
	if err != nil {
		h.log.Warn("dhcp: booter failed", "mac", c.MAC.String(), "err", err)
		return h.drop(DropBooter)
	}
	if !boot.Netboots() {
		return h.drop(DropNoBoot)
	}
	st := h.newReply(req, mt, respType)
	resp := &st.pkt
	file := h.addBootOptions(resp, &st.arena, c, true)
	if file == "" {
		return h.drop(DropNoBoot)
	}
	step := StepDHCPOffer
	if respType == dhcpv4.MessageTypeAck {
		step = StepDHCPAck
		if l, ok := h.cfg.Addresses.(LeaseLearner); ok && c.IP.IsValid() {
			l.Learn(ctx, c.MAC, c.IP)
		}
	}
	h.cfg.Recorder.Event(Event{MAC: c.MAC.String(), Machine: boot.Machine, Step: step, Detail: "proxy " + eventDetail(netip.Addr{}, c, boot, file)})
	dest := h.destination(req, respType, resp)
	if localPort == proxyPort && peer.Addr().Is4() && !peer.Addr().IsUnspecified() && !c.Relay.IsValid() {
		// The boot server exchange is unicast: answer where it came from.
		dest = Destination{Kind: DestUnicast, Addr: peer}
	}
	st.reply.Dest = dest
	return &st.reply, 0
}

// relayAccepted reports whether a request relayed through relay may be
// answered: relay is one of the configured relays, or it lies in the
// subnet of res, the address the request resolves to, or (res nil: none
// yet) Addresses serves a dynamic range on the relay's segment.
// A request that is not relayed is always accepted.
func (h *DHCPHandler) relayAccepted(relay netip.Addr, res *Reservation) bool {
	if !relay.IsValid() {
		return true
	}
	for _, p := range h.cfg.Relays {
		if p.Contains(relay) {
			return true
		}
	}
	if res == nil {
		sk, ok := h.cfg.Addresses.(SegmentKnower)
		return ok && sk.RelayKnown(relay)
	}
	return res != nil && res.Subnet.Prefix.IsValid() && res.Subnet.Prefix.Contains(relay)
}

// newReply builds the reply skeleton by hand rather than with
// dhcpv4.NewReplyFromRequest, which draws a random transaction ID from
// crypto/rand only to overwrite it: a reply of type respType to req, of
// type mt, with the server identifier, in a replyState from the pool.
func (h *DHCPHandler) newReply(req *dhcpv4.DHCPv4, mt, respType dhcpv4.MessageType) *replyState {
	st, _ := h.replies.Get().(*replyState)
	if st == nil {
		// Room for every option a reply carries, so that the map is
		// allocated once, not grown.
		st = &replyState{pkt: dhcpv4.DHCPv4{Options: make(dhcpv4.Options, 16)}}
	}
	st.arena = st.store[:0]
	st.reply = Reply{Packet: &st.pkt, state: st}
	r := &st.pkt
	*r = dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       r.Options, // empty: recycle cleared it
	}
	if mt == dhcpv4.MessageTypeInform || mt == dhcpv4.MessageTypeRequest {
		r.ClientIPAddr = req.ClientIPAddr
	}
	r.Options[dhcpv4.OptionDHCPMessageType.Code()] = msgTypeValue(respType)
	r.Options[dhcpv4.OptionServerIdentifier.Code()] = h.sid
	// RFC 6842: echo the client id. RFC 3046: echo the relay agent
	// information to the relay, which strips it; only a relay adds it,
	// so a request that was not relayed gets none back (a client could
	// otherwise make every reply carry a kilobyte of its choosing).
	// The values are the request's own bytes, as OptGeneric would have
	// them; nothing writes into either packet's options afterwards.
	if v := req.GetOneOption(dhcpv4.OptionClientIdentifier); v != nil {
		r.Options[dhcpv4.OptionClientIdentifier.Code()] = v
	}
	if _, relayed := addr4(req.GatewayIPAddr); relayed {
		if v := req.GetOneOption(dhcpv4.OptionRelayAgentInformation); v != nil {
			r.Options[dhcpv4.OptionRelayAgentInformation.Code()] = v
		}
	}
	return st
}

// recycle gives a sent reply's packet, options map and arena back to the
// pool. Nothing may use rep afterwards.
func (h *DHCPHandler) recycle(rep *Reply) {
	st := rep.state
	if st == nil {
		return
	}
	clear(st.pkt.Options) // keeps its room
	st.pkt = dhcpv4.DHCPv4{Options: st.pkt.Options}
	st.reply, st.arena = Reply{}, nil
	h.replies.Put(st)
}

func leaseTime(s Subnet) time.Duration {
	if s.LeaseTime <= 0 {
		return time.Hour
	}
	return s.LeaseTime
}

// addSubnetOptions sets the segment's options (mask, router, DNS,
// domain), the host name and, withLease, the lease times, their values
// taken from a.
func (h *DHCPHandler) addSubnetOptions(resp *dhcpv4.DHCPv4, a *optionArena, res Reservation, withLease bool) {
	s, o := res.Subnet, resp.Options
	if s.Prefix.IsValid() {
		a.putMask(o, s.Prefix.Bits())
	}
	if s.Gateway.IsValid() {
		a.putIPs(o, dhcpv4.OptionRouter, s.Gateway)
	}
	if len(s.DNS) > 0 {
		a.putIPs(o, dhcpv4.OptionDomainNameServer, s.DNS...)
	}
	if s.Domain != "" {
		a.putString(o, dhcpv4.OptionDomainName, s.Domain)
	}
	if res.Hostname != "" {
		a.putString(o, dhcpv4.OptionHostName, res.Hostname)
	}
	if withLease {
		lt := leaseTime(s)
		a.putDuration(o, dhcpv4.OptionIPAddressLeaseTime, lt)
		a.putDuration(o, dhcpv4.OptionRenewTimeValue, lt/2)
		a.putDuration(o, dhcpv4.OptionRebindingTimeValue, lt*7/8)
	}
}

// BootFileFor returns the boot file a client gets and whether it is
// fetched over HTTP (a full URL) rather than TFTP (a name in the TFTP
// root). ok is false for architectures netboot has no binary for.
//
// The order matters: iPXE (option 77) first, so that the iPXE binary
// the firmware just loaded gets its script instead of itself again —
// that is what breaks the PXE → iPXE → PXE loop.
func (h *DHCPHandler) BootFileFor(c Client) (file string, http bool, ok bool) {
	bf := h.cfg.BootFiles
	switch {
	case c.IsIPXE():
		return h.cfg.HTTPBase + "/boot/" + c.MAC.String() + ".ipxe", true, true
	case isHTTPClient(c):
		switch c.Arch {
		case ArchEFIx64HTTP:
			return h.cfg.HTTPBase + "/boot/ipxe/" + bf.EFIx64, true, true
		case ArchEFIARM64HTTP:
			return h.cfg.HTTPBase + "/boot/ipxe/" + bf.ARM64, true, true
		}
		return "", false, false
	}
	switch c.Arch {
	case ArchBIOS:
		return bf.BIOS, false, true
	case ArchEFIx64, ArchEFIBC:
		return bf.EFIx64, false, true
	case ArchEFIARM64:
		return bf.ARM64, false, true
	case ArchUnknown:
		// Old BIOS PXE ROMs predate option 93.
		if strings.HasPrefix(c.VendorClass, "PXEClient") {
			return bf.BIOS, false, true
		}
	}
	return "", false, false
}

// addBootOptions sets siaddr, options 66/67 and the file field
// consistently, plus option 60 where the client needs it echoed. It
// returns the boot file, or "" when the client's architecture has none.
func (h *DHCPHandler) addBootOptions(resp *dhcpv4.DHCPv4, a *optionArena, c Client, proxy bool) string {
	file, overHTTP, ok := h.BootFileFor(c)
	if !ok {
		return ""
	}
	resp.ServerIPAddr = h.sid
	if len(file) < 128 {
		resp.BootFileName = file
	}
	o := resp.Options
	a.putString(o, dhcpv4.OptionBootfileName, file)
	if !overHTTP {
		o[dhcpv4.OptionTFTPServerName.Code()] = h.tftp
	}
	switch {
	case isHTTPClient(c):
		// UEFI HTTP boot ignores offers that do not echo its class.
		o[dhcpv4.OptionClassIdentifier.Code()] = classHTTPClient
	case proxy:
		// PXE clients only take a proxy offer that says PXEClient; option 43
		// sub-option 6 (discovery control) = 8: boot the file named in this
		// offer, skip boot server discovery and menus.
		o[dhcpv4.OptionClassIdentifier.Code()] = classPXEClient
		o[dhcpv4.OptionVendorSpecificInformation.Code()] = pxeDiscoveryControl
	}
	return file
}

// Option values every such reply carries the same, shared by all of them
// (capped at their length, so that an append copies).
var (
	classHTTPClient     = []byte("HTTPClient")[:10:10]
	classPXEClient      = []byte("PXEClient")[:9:9]
	pxeDiscoveryControl = []byte{6, 1, 8, 255}
)

// destination picks where a reply of type respType goes, in RFC 2131 4.1
// order, which server4 leaves to us.
func (h *DHCPHandler) destination(req *dhcpv4.DHCPv4, respType dhcpv4.MessageType, resp *dhcpv4.DHCPv4) Destination {
	return replyDestination(req, respType, resp.YourIPAddr, h.cfg.ServerPort, h.cfg.ClientPort)
}

// ReplyDestination picks where a reply goes (RFC 2131 4.1): giaddr set →
// giaddr:serverPort; NAK → broadcast; ciaddr set → ciaddr:clientPort;
// broadcast flag → broadcast; else unicast to yiaddr at the client's MAC
// (DestHardware).
func ReplyDestination(req, resp *dhcpv4.DHCPv4, serverPort, clientPort uint16) Destination {
	return replyDestination(req, resp.MessageType(), resp.YourIPAddr, serverPort, clientPort)
}

// replyDestination is ReplyDestination for a reply of type respType that
// offers yiaddr.
func replyDestination(req *dhcpv4.DHCPv4, respType dhcpv4.MessageType, yiaddr net.IP, serverPort, clientPort uint16) Destination {
	bcast := Destination{Kind: DestBroadcast, Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), clientPort)}
	if gi, ok := addr4(req.GatewayIPAddr); ok {
		return Destination{Kind: DestRelay, Addr: netip.AddrPortFrom(gi, serverPort)}
	}
	if respType == dhcpv4.MessageTypeNak {
		return bcast
	}
	if ci, ok := addr4(req.ClientIPAddr); ok {
		return Destination{Kind: DestUnicast, Addr: netip.AddrPortFrom(ci, clientPort)}
	}
	if req.IsBroadcast() {
		return bcast
	}
	if yi, ok := addr4(yiaddr); ok {
		return Destination{Kind: DestHardware, Addr: netip.AddrPortFrom(yi, clientPort)}
	}
	return bcast
}
