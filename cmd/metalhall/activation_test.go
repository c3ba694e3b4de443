package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// The crash tests (subproc) pass real listeners through activation; these
// are the refusals, which touch no descriptor.
func TestSocketActivationRefusesWhatItCannotServe(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct{ pid, fds, names, want string }{
		{self, "3", "admin:provisioning:x", "pass one or two listeners"},
		{self, "zero", "admin", "pass one or two listeners"},
		{self, "2", "admin", "names 1 descriptors, LISTEN_FDS=2"},
	} {
		t.Setenv("LISTEN_PID", tc.pid)
		t.Setenv("LISTEN_FDS", tc.fds)
		t.Setenv("LISTEN_FDNAMES", tc.names)
		_, _, err := activatedListeners()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LISTEN_FDS=%s LISTEN_FDNAMES=%s: err = %v, want %q", tc.fds, tc.names, err, tc.want)
		}
		if _, set := os.LookupEnv("LISTEN_FDS"); set {
			t.Error("LISTEN_FDS left in the environment for children")
		}
	}
	// Another process's descriptors: not ours to take.
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "2")
	if a, p, err := activatedListeners(); a != nil || p != nil || err != nil {
		t.Errorf("LISTEN_PID of another process: %v %v %v, want nothing", a, p, err)
	}
}
