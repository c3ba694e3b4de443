package agent

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Just enough rtnetlink to configure one interface from a DHCP lease: an
// address and a default route. A full netlink library would double the
// agent's dependencies for three messages.

func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link %s: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link %s: set up: %w", name, err)
	}
	return nil
}

type nlAttr struct {
	typ  uint16
	data []byte
}

func nlRequest(typ uint16, flags uint16, body []byte, attrs ...nlAttr) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	// Give up rather than hang if the kernel never answers.
	tv := unix.Timeval{Sec: 5}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	msg := make([]byte, unix.SizeofNlMsghdr, 128)
	msg = append(msg, body...)
	for _, a := range attrs {
		l := unix.SizeofRtAttr + len(a.data)
		msg = binary.NativeEndian.AppendUint16(msg, uint16(l))
		msg = binary.NativeEndian.AppendUint16(msg, a.typ)
		msg = append(msg, a.data...)
		for len(msg)%4 != 0 {
			msg = append(msg, 0)
		}
	}
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1) // seq
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("netlink answer: %w", err)
	}
	if n < unix.SizeofNlMsghdr+4 || ne.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return fmt.Errorf("netlink: unexpected answer (%d bytes)", n)
	}
	if code := int32(ne.Uint32(buf[unix.SizeofNlMsghdr:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// addAddress adds ip/prefix to the interface.
func addAddress(ifindex int, ip net.IP, prefix int) error {
	ip4 := ip.To4()
	body := []byte{unix.AF_INET, byte(prefix), 0, unix.RT_SCOPE_UNIVERSE, 0, 0, 0, 0}
	binary.NativeEndian.PutUint32(body[4:], uint32(ifindex))
	err := nlRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, body,
		nlAttr{unix.IFA_LOCAL, ip4}, nlAttr{unix.IFA_ADDRESS, ip4})
	if err != nil {
		return fmt.Errorf("add address %s/%d: %w", ip, prefix, err)
	}
	return nil
}

// addDefaultRoute routes everything via gw on the interface.
func addDefaultRoute(ifindex int, gw net.IP) error {
	body := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_DHCP, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	oif := binary.NativeEndian.AppendUint32(nil, uint32(ifindex))
	err := nlRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, body,
		nlAttr{unix.RTA_GATEWAY, gw.To4()}, nlAttr{unix.RTA_OIF, oif})
	if err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	return nil
}

// writeResolvConf lets Go's pure resolver find the DHCP name servers.
func writeResolvConf(dns []net.IP) error {
	if len(dns) == 0 {
		return nil
	}
	s := ""
	for _, d := range dns {
		s += "nameserver " + d.String() + "\n"
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	return os.WriteFile("/etc/resolv.conf", []byte(s), 0o644)
}
