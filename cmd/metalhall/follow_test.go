package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// The follower reads the service's event feed, a long poll the store
// wakes on each commit, instead of asking again every so often. The
// barrier: the service's gauge shows the follower parked in its wait
// before the event is written; the line then arrives from that wait (there
// is no other source of lines, and no interval to wait out).
func TestFollowedEventsArriveFromTheFeedsLongPoll(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	importExampleRack(r)

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"metalhall", "--server", url, "--token", tok, "machine", "events", "gpu-a01-01", "--follow", "-o", "json"}, pw, io.Discard)
		pw.Close()
	}()
	lines := make(chan inventory.Event)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var e inventory.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("not one event a line: %q (%v)", sc.Text(), err)
				continue
			}
			lines <- e
		}
	}()
	// The history (none: an import writes the rack's event), then the wait.
	waitUntil(t, "the follower to wait in the event feed", func() bool { return metric(t, url, "metalhall_api_event_waits") == 1 })

	r.ok("machine", "maintenance", "--on", "--reason", "fan", "gpu-a01-02") // another machine's: not shown
	r.ok("machine", "maintenance", "--on", "--reason", "fan", "gpu-a01-01")
	for e := range lines {
		if e.Subject != "machine/gpu-a01-01" {
			t.Errorf("followed another machine's event: %+v", e)
		}
		if e.Action == "machine.maintenance" {
			break
		}
	}
	cancel()
	go io.Copy(io.Discard, pr) // whatever it was writing when cancelled
	if code := <-done; code != 0 {
		t.Fatalf("events --follow: exit %d", code)
	}
}
