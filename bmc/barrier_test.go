package bmc

import (
	"testing"
	"time"
)

// users is how many operations hold or wait for the BMC's lock.
func (l *addrLocks) users(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[key]; e != nil {
		return e.refs
	}
	return 0
}

// waitUntil waits for a condition the test needs before it goes on (an
// operation started, a lock taken): a barrier, not a timing. The limit only
// keeps a broken build from hanging the run.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
	}
}
