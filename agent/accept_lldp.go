package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/agent/wire"
)

const ethPLLDP = 0x88cc

// lldpMulticast is the nearest-bridge address switches send LLDP to; NICs
// filter it unless asked to take it.
var lldpMulticast = [6]byte{0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e}

// listenLLDP listens on every Ethernet port at once, for at most d, and
// keeps the first announcement each one hears. Ports without carrier are
// reported without listening: a dead link is a finding of its own.
func listenLLDP(ctx context.Context, nics []wire.NIC, d time.Duration) []wire.LLDPPort {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	out := make([]wire.LLDPPort, 0, len(nics))
	for _, n := range nics {
		if len(n.MAC) != len("00:00:00:00:00:00") {
			continue // InfiniBand: no LLDP there
		}
		out = append(out, wire.LLDPPort{Interface: n.Name, PCIAddress: n.PCIAddress, MAC: n.MAC, Carrier: n.Carrier})
	}
	var wg sync.WaitGroup
	for i := range out {
		if !out[i].Carrier {
			continue
		}
		wg.Add(1)
		go func(p *wire.LLDPPort) {
			defer wg.Done()
			nb, err := lldpNeighbor(ctx, p.Interface)
			if err != nil {
				p.Error = err.Error()
			}
			p.Neighbor = nb
		}(&out[i])
	}
	wg.Wait()
	return out
}

// lldpNeighbor reads LLDP frames on one interface until one parses or ctx
// ends (nil, nil: nothing heard).
func lldpNeighbor(ctx context.Context, ifname string) (*wire.LLDPNeighbor, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("LLDP on %s: %w", ifname, err)
	}
	proto := int(htons(ethPLLDP))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("LLDP on %s: socket: %w", ifname, err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
		return nil, fmt.Errorf("LLDP on %s: bind: %w", ifname, err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
	copy(mreq.Address[:], lldpMulticast[:])
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return nil, fmt.Errorf("LLDP on %s: multicast membership: %w", ifname, err)
	}
	// Short receive timeouts let the loop notice ctx ending.
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("LLDP on %s: %w", ifname, err)
	}
	buf := make([]byte, 9216)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("LLDP on %s: %w", ifname, err)
		}
		if nb, err := parseLLDP(buf[:n]); err == nil {
			return nb, nil
		}
	}
	return nil, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// LLDP TLV types (IEEE 802.1AB) and the ID subtypes read as addresses.
const (
	tlvEnd        = 0
	tlvChassisID  = 1
	tlvPortID     = 2
	tlvPortDesc   = 4
	tlvSystemName = 5

	chassisSubtypeMAC = 4
	portSubtypeMAC    = 3
)

// parseLLDP reads an Ethernet frame carrying an LLDPDU. The chassis and
// port IDs are mandatory; MAC-address IDs are written as MACs, the other
// subtypes (interface name, locally assigned...) as their text.
func parseLLDP(frame []byte) (*wire.LLDPNeighbor, error) {
	if len(frame) < 14 || binary.BigEndian.Uint16(frame[12:14]) != ethPLLDP {
		return nil, errors.New("not an LLDP frame")
	}
	b := frame[14:]
	var nb wire.LLDPNeighbor
	for len(b) >= 2 {
		h := binary.BigEndian.Uint16(b)
		typ, n := int(h>>9), int(h&0x1ff)
		b = b[2:]
		if n > len(b) {
			return nil, fmt.Errorf("LLDP TLV %d: length %d past the frame", typ, n)
		}
		v := b[:n]
		b = b[n:]
		switch typ {
		case tlvEnd:
			b = nil
		case tlvChassisID, tlvPortID:
			if n < 2 {
				return nil, fmt.Errorf("LLDP TLV %d: too short", typ)
			}
			id := string(v[1:])
			if (typ == tlvChassisID && v[0] == chassisSubtypeMAC || typ == tlvPortID && v[0] == portSubtypeMAC) && n == 7 {
				id = net.HardwareAddr(v[1:]).String()
			}
			if typ == tlvChassisID {
				nb.ChassisID = id
			} else {
				nb.PortID = id
			}
		case tlvPortDesc:
			nb.PortDescription = string(v)
		case tlvSystemName:
			nb.SystemName = string(v)
		}
	}
	if nb.ChassisID == "" || nb.PortID == "" {
		return nil, errors.New("LLDP frame without chassis or port ID")
	}
	return &nb, nil
}
