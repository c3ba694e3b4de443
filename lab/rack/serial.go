package rack

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// serialRelay wires an IPMI machine's serial port to its BMC's
// Serial-over-LAN, like the baseboard wiring of a real server. ipmi_sim
// reaches its SOL device as a TCP client ("sol tcp:..." in lan.conf), and
// QEMU's serial chardev connects as a client to a unix socket: neither
// listens, so the lab holds both listeners (no port is picked, released
// and bound later) and copies between the two connections. QEMU still
// logs the serial port to serial.log (chardev logfile=), which the tests
// read as before.
type serialRelay struct {
	bmcLn, vmLn net.Listener
	sock        string // the unix socket QEMU connects to

	mu      sync.Mutex
	bmc, vm net.Conn
	closed  bool
}

// newSerialRelay listens for ipmi_sim on bmcLn (in the rack's namespace)
// and for QEMU on a unix socket of its own (in a short temporary
// directory: a socket path has at most 107 bytes, test directories can be
// longer).
func newSerialRelay(bmcLn net.Listener) (*serialRelay, error) {
	dir, err := os.MkdirTemp("", "mhsol-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "serial.sock")
	vmLn, err := net.Listen("unix", sock)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &serialRelay{bmcLn: bmcLn, vmLn: vmLn, sock: sock}
	go s.accept(bmcLn, func(c net.Conn) { s.swap(&s.bmc, c) }, func() net.Conn { return s.peer(&s.vm) })
	go s.accept(vmLn, func(c net.Conn) { s.swap(&s.vm, c) }, func() net.Conn { return s.peer(&s.bmc) })
	return s, nil
}

// accept takes each new connection on ln as the current one of its side
// and copies what it reads to the other side's current connection.
func (s *serialRelay) accept(ln net.Listener, set func(net.Conn), other func() net.Conn) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		set(c)
		go func() {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if o := other(); o != nil {
						// The serial port must never stall the guest (or
						// ipmi_sim): what the other side does not take
						// in time is dropped, as on a real UART.
						_ = o.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
						_, _ = o.Write(buf[:n])
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (s *serialRelay) swap(slot *net.Conn, c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return
	}
	if *slot != nil {
		(*slot).Close()
	}
	*slot = c
}

func (s *serialRelay) peer(slot *net.Conn) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *slot
}

// Close stops the relay and closes both sides.
func (s *serialRelay) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, c := range []net.Conn{s.bmc, s.vm} {
		if c != nil {
			c.Close()
		}
	}
	s.mu.Unlock()
	err := errors.Join(s.bmcLn.Close(), s.vmLn.Close())
	_ = os.RemoveAll(filepath.Dir(s.sock))
	return err
}
