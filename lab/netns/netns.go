// Package netns makes private network namespaces for tests and the lab:
// a bridge, tap devices for QEMU and veth pairs between namespaces, so
// real DHCP servers and real PXE firmware meet without touching any other
// network. It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Namespace is a named network namespace (ip netns), deleted by Close.
type Namespace struct {
	Name string
}

// Available says why namespaces cannot be made here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("network namespaces need iproute2's ip command")
	}
	return nil
}

// New creates a namespace named prefix-<random>, with loopback up.
// Names are unique per call, so parallel tests do not collide.
func New(ctx context.Context, prefix string) (*Namespace, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	var b [4]byte
	rand.Read(b[:])
	n := &Namespace{Name: fmt.Sprintf("%s-%s", prefix, hex.EncodeToString(b[:]))}
	if err := run(ctx, "ip", "netns", "add", n.Name); err != nil {
		return nil, err
	}
	if err := n.IP(ctx, "link", "set", "lo", "up"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close deletes the namespace and with it every link inside. Processes
// still running in it keep it alive: stop them first.
func (n *Namespace) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return run(ctx, "ip", "netns", "del", n.Name)
}

// IP runs `ip -n NAME args...`.
func (n *Namespace) IP(ctx context.Context, args ...string) error {
	return run(ctx, "ip", append([]string{"-n", n.Name}, args...)...)
}

// AddBridge creates bridge name with address addr (e.g. 10.99.1.1/24) and
// brings it up.
func (n *Namespace) AddBridge(ctx context.Context, name string, addr netip.Prefix) error {
	if err := n.IP(ctx, "link", "add", name, "type", "bridge"); err != nil {
		return err
	}
	// No STP, no forwarding delay: a PXE ROM gives up long before a
	// port would leave the listening state.
	if err := n.IP(ctx, "link", "set", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"); err != nil {
		return err
	}
	if addr.IsValid() {
		if err := n.IP(ctx, "addr", "add", addr.String(), "dev", name); err != nil {
			return err
		}
	}
	return n.IP(ctx, "link", "set", name, "up")
}

// AddTap creates tap device name on bridge, up, for a QEMU process that
// runs in the namespace (see Command).
func (n *Namespace) AddTap(ctx context.Context, name, bridge string) error {
	if err := n.IP(ctx, "tuntap", "add", "dev", name, "mode", "tap"); err != nil {
		return err
	}
	if err := n.IP(ctx, "link", "set", name, "master", bridge); err != nil {
		return err
	}
	return n.IP(ctx, "link", "set", name, "up")
}

// AddVeth joins n and other with a veth pair: local in n (with address
// addr, if valid), remote in other (with remoteAddr, if valid), both up.
func (n *Namespace) AddVeth(ctx context.Context, local string, addr netip.Prefix, other *Namespace, remote string, remoteAddr netip.Prefix) error {
	if err := n.IP(ctx, "link", "add", local, "type", "veth", "peer", "name", remote, "netns", other.Name); err != nil {
		return err
	}
	if addr.IsValid() {
		if err := n.IP(ctx, "addr", "add", addr.String(), "dev", local); err != nil {
			return err
		}
	}
	if remoteAddr.IsValid() {
		if err := other.IP(ctx, "addr", "add", remoteAddr.String(), "dev", remote); err != nil {
			return err
		}
	}
	if err := n.IP(ctx, "link", "set", local, "up"); err != nil {
		return err
	}
	return other.IP(ctx, "link", "set", remote, "up")
}

// Command returns a command that runs name in the namespace
// (`ip netns exec`). The caller starts it and must stop it before Close.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs fn on a new OS thread switched into the namespace and waits
// for it. Sockets fn opens belong to the namespace for their whole life,
// whichever goroutine uses them later; goroutines fn starts do not run in
// the namespace. The thread is never returned to the Go scheduler: it
// ends with fn, so no other goroutine ever runs in the wrong namespace.
func (n *Namespace) Run(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine.
		f, err := os.Open("/run/netns/" + n.Name)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", n.Name, err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("netns %s: setns: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func run(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %w: %s", name, args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
