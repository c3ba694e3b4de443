package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

// sdNotify sends state to the service manager that started this process,
// the protocol of sd_notify(3): one datagram to the unix socket named by
// NOTIFY_SOCKET ("@..." is an abstract socket, as Go spells it too).
// Without NOTIFY_SOCKET (not run by systemd, or a unit that is not
// Type=notify) it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	// A datagram to a live manager does not block; a deadline keeps a
	// wedged one from holding the start.
	if err := conn.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", addr, err)
	}
	return nil
}

// readyState is what serve tells systemd once its listeners are bound:
// READY=1 (units ordered after metalhall.service may connect now), and the
// addresses, which `systemctl status metalhall` shows.
func readyState(adminURL, provURL string) string {
	return fmt.Sprintf("READY=1\nSTATUS=serving: admin %s, provisioning %s\nMAINPID=%d", adminURL, provURL, os.Getpid())
}
