package images

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/metalhall/metalhall/inventory"
)

// URLPolicy says where ImportURL may fetch from. Every connection — the
// first and one per redirect hop — is checked on the address it is about
// to connect to, after name resolution, so a name that resolves
// differently the second time (DNS rebinding) gains nothing.
//
// An address must be allowed: inside an Allow prefix, or the resolved
// address of a host named in Hosts. Even then loopback, link-local,
// unspecified and multicast addresses, and the BMC addresses Refused
// returns, are refused unless an Allow prefix lies entirely inside that
// refused range (127.0.0.1/32 allows loopback's 127.0.0.1; 0.0.0.0/0 does
// not). The service's own listeners (address and port) are refused always:
// the service never imports from itself. An empty policy allows nothing:
// URL import is off until an admin names destinations.
type URLPolicy struct {
	Allow []netip.Prefix
	Hosts []string // lower case, no port
	// Refused is called for each connection. It may be nil.
	Refused func(ctx context.Context) (Refusals, error)
}

// Refusals are destinations of the service's own: see URLPolicy.
type Refusals struct {
	Addrs     []netip.Addr     // BMCs: refused unless allowed on their own
	Listeners []netip.AddrPort // the service itself: refused always
}

// ParseURLAllow reads the --image-url-allow entries: a CIDR, an address,
// or a host name.
func ParseURLAllow(entries []string) (URLPolicy, error) {
	var p URLPolicy
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
			continue
		case strings.Contains(e, "://"):
			return p, fmt.Errorf("image URL allow-list: %q is a URL: give its host name or address alone (no scheme, port or path)", e)
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return p, fmt.Errorf("image URL allow-list: %q is not a CIDR (e.g. 10.20.0.0/16): %w", e, err)
			}
			p.Allow = append(p.Allow, pfx.Masked())
		default:
			if a, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				p.Allow = append(p.Allow, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			if !validHostName(e) {
				return p, fmt.Errorf("image URL allow-list: %q is neither a CIDR, an IP address nor a host name (no port, no scheme)", e)
			}
			p.Hosts = append(p.Hosts, strings.ToLower(strings.TrimSuffix(e, ".")))
		}
	}
	return p, nil
}

func validHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ErrURLRefused is wrapped when the allow-list refuses a destination.
var ErrURLRefused = errors.New("destination not allowed")

// URLRefusedError is a destination the policy refuses. It is returned
// before any connection is tried, so it says nothing about the port.
type URLRefusedError struct {
	Host string
	Why  string
	Self bool // the service's own listener: no allow-list opens it
}

func (e *URLRefusedError) Error() string {
	if e.Self {
		return fmt.Sprintf("image URL host %s is this service's own listener: the service does not import from itself", e.Host)
	}
	return fmt.Sprintf("image URL host %s is not an allowed destination (%s): an admin must add it to the service's image URL allow-list", e.Host, e.Why)
}

func (e *URLRefusedError) Unwrap() []error { return []error{ErrURLRefused, errInvalidURL} }

// errInvalidURL makes a refusal a bad request (400) to the API.
var errInvalidURL = invalid("url", "destination not allowed")

// special are the ranges refused unless allowed on their own.
var special = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("ff00::/8"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// check says whether a connection to a, reached through host, is allowed.
func (p *URLPolicy) check(ctx context.Context, host string, a netip.Addr, port uint16) error {
	// A zone (fe80::1%eth0) would make every prefix test false: judge the
	// address itself.
	a = a.Unmap().WithZone("")
	allowed := false
	for _, pfx := range p.Allow {
		if pfx.Contains(a) {
			allowed = true
			break
		}
	}
	if !allowed && !p.hostAllowed(host) {
		return &URLRefusedError{Host: host, Why: "not on the allow-list"}
	}
	refused := special
	if p.Refused != nil {
		own, err := p.Refused(ctx)
		if err != nil {
			return fmt.Errorf("image URL: checking the destination: %w", err)
		}
		for _, l := range own.Listeners {
			if l.Addr().Unmap().WithZone("") == a && l.Port() == port {
				return &URLRefusedError{Host: host, Self: true}
			}
		}
		for _, r := range own.Addrs {
			r = r.Unmap()
			refused = append(refused[:len(refused):len(refused)], netip.PrefixFrom(r, r.BitLen()))
		}
	}
	for _, r := range refused {
		if r.Contains(a) && !p.allowsInside(r, a) {
			return &URLRefusedError{Host: host, Why: "a loopback, link-local or multicast address, this service, or a BMC"}
		}
	}
	return nil
}

func (p *URLPolicy) hostAllowed(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range p.Hosts {
		if h == host {
			return true
		}
	}
	return false
}

// allowsInside says whether an Allow prefix inside r names a.
func (p *URLPolicy) allowsInside(r netip.Prefix, a netip.Addr) bool {
	for _, pfx := range p.Allow {
		if pfx.Contains(a) && pfx.Bits() >= r.Bits() && r.Contains(pfx.Addr()) {
			return true
		}
	}
	return false
}

// dialer connects only to addresses the policy allows: it resolves the
// name itself, checks every address, and dials the checked address, so
// nothing between the check and the connect can change where it goes.
type dialer struct {
	policy *URLPolicy
	d      *net.Dialer
}

func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("image URL host %s: %w", host, err)
		}
	}
	var first error
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("image URL port %q: %w", port, err)
	}
	for _, a := range addrs {
		if err := d.policy.check(ctx, host, a, uint16(pn)); err != nil {
			// One refused address refuses the host: a name that also
			// resolves to loopback is not one to fetch from.
			return nil, err
		}
	}
	for _, a := range addrs {
		c, err := d.d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("image URL host %s: no address", host)
	}
	return nil, first
}

// Machines is what ServiceDestinations needs of the inventory.
type Machines interface {
	Machines(ctx context.Context, f inventory.MachineFilter) ([]inventory.Machine, error)
}

// ServiceDestinations is a URLPolicy.Refused for the service: the
// addresses of its own listeners (every local address for one bound to
// all of them) and the BMC address of every enrolled machine. BMCs named
// by host name rather than address are not resolved: their addresses are
// refused only if the allow-list does not name them, like any other.
func ServiceDestinations(inv Machines, listeners ...net.Addr) func(context.Context) (Refusals, error) {
	return func(ctx context.Context) (Refusals, error) {
		var out Refusals
		for _, l := range listeners {
			ap, err := netip.ParseAddrPort(l.String())
			if err != nil {
				continue
			}
			if !ap.Addr().IsUnspecified() {
				out.Listeners = append(out.Listeners, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
				continue
			}
			ifaddrs, err := net.InterfaceAddrs()
			if err != nil {
				return out, fmt.Errorf("local addresses: %w", err)
			}
			for _, ia := range ifaddrs {
				if pfx, err := netip.ParsePrefix(ia.String()); err == nil {
					out.Listeners = append(out.Listeners, netip.AddrPortFrom(pfx.Addr().Unmap(), ap.Port()))
				}
			}
		}
		ms, err := inv.Machines(ctx, inventory.MachineFilter{})
		if err != nil {
			return out, fmt.Errorf("BMC addresses: %w", err)
		}
		for _, m := range ms {
			if a, ok := bmcAddr(m.BMC.Address); ok {
				out.Addrs = append(out.Addrs, a)
			}
		}
		return out, nil
	}
}

// bmcAddr reads the IP out of a BMC address: host, host:port or a URL.
func bmcAddr(s string) (netip.Addr, bool) {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		s = u.Host
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return a.Unmap(), err == nil
}
