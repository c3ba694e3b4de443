package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// activatedListeners takes the listeners passed by socket activation, the
// protocol of sd_listen_fds(3): systemd (a .socket unit with
// FileDescriptorName=admin or provisioning), or any parent that binds the
// addresses itself and keeps them across restarts of the service, as the
// crash tests do. Nothing passed: both nil. A passed descriptor that is
// not a stream listener named admin or provisioning is an error: serving
// on something other than what the operator configured would be worse.
func activatedListeners() (admin, prov net.Listener, err error) {
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	if pid == "" {
		return nil, nil, nil
	}
	// The variables are for this process only: a child must not think
	// the descriptors are its own.
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if pid != strconv.Itoa(os.Getpid()) {
		return nil, nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 || n > 2 {
		return nil, nil, usagef("socket activation: LISTEN_FDS=%q: pass one or two listeners (admin, provisioning)", fds)
	}
	nameList := strings.Split(names, ":")
	if len(nameList) != n {
		return nil, nil, usagef("socket activation: LISTEN_FDNAMES=%q names %d descriptors, LISTEN_FDS=%d: name each admin or provisioning (FileDescriptorName=)", names, len(nameList), n)
	}
	const firstFD = 3 // SD_LISTEN_FDS_START
	for i, name := range nameList {
		fd := firstFD + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "listen-"+name)
		ln, err := net.FileListener(f)
		f.Close() // FileListener holds its own duplicate
		if err != nil {
			closeAll(admin, prov)
			return nil, nil, fmt.Errorf("socket activation: descriptor %d (%s) is not a stream listener: %w", fd, name, err)
		}
		switch {
		case name == "admin" && admin == nil:
			admin = ln
		case name == "provisioning" && prov == nil:
			prov = ln
		default:
			ln.Close()
			closeAll(admin, prov)
			return nil, nil, usagef("socket activation: descriptor %d is named %q: name one admin and at most one provisioning listener", fd, name)
		}
	}
	return admin, prov, nil
}

func closeAll(lns ...net.Listener) {
	for _, ln := range lns {
		if ln != nil {
			ln.Close()
		}
	}
}
