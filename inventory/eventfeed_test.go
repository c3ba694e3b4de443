package inventory

import (
	"fmt"
	"path/filepath"
	"testing"
)

func TestEventsAfterReadsOldestFirstAndSaysWhereToContinue(t *testing.T) {
	inv := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{})
	t.Cleanup(func() { inv.Close() })
	for i := range 30 {
		must(inv.AppendEvent(ctx, Event{Actor: "tok", Subject: fmt.Sprintf("machine/m%d", i%3), Action: "power", Detail: fmt.Sprint(i)}))
	}
	all := must(inv.Events(ctx, EventFilter{}))
	// More than Limit new events: the oldest come first, none is skipped.
	got, next, err := inv.EventsAfter(ctx, EventFilter{After: all[4].Seq, Limit: 5}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0].Detail != "5" || got[4].Detail != "9" || next != got[4].Seq {
		t.Fatalf("after the 5th, limit 5: %d events from %q, next %d", len(got), got[0].Detail, next)
	}
	// Events the filter drops are looked at once: next passes over them.
	got, next, err = inv.EventsAfter(ctx, EventFilter{After: all[4].Seq, Kinds: []string{"rack"}}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 || next != all[14].Seq {
		t.Fatalf("no rack events in a scan of 10: %d events, next %d, want %d", len(got), next, all[14].Seq)
	}
	// Nothing new: next stays where it was.
	if got, next, _ := inv.EventsAfter(ctx, EventFilter{After: all[29].Seq}, 0); len(got) != 0 || next != all[29].Seq {
		t.Fatalf("after the newest: %d events, next %d", len(got), next)
	}
}

func TestEventsCommittedWakesEveryFollowerAfterTheCommit(t *testing.T) {
	inv := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{})
	t.Cleanup(func() { inv.Close() })
	first := must(inv.AppendEvent(ctx, Event{Actor: "tok", Subject: "machine/m1", Action: "power"}))
	a, last := inv.EventsCommitted()
	b, _ := inv.EventsCommitted()
	if last != first.Seq {
		t.Fatalf("newest committed %d, want %d", last, first.Seq)
	}
	select {
	case <-a:
		t.Fatal("woken before anything was appended")
	default:
	}
	ev := must(inv.AppendEvent(ctx, Event{Actor: "tok", Subject: "rack/r1", Action: "rack.active"}))
	<-a // both followers wake, without a clock
	<-b
	// What woke them is already readable.
	got, _, err := inv.EventsAfter(ctx, EventFilter{After: last}, 0)
	if err != nil || len(got) != 1 || got[0].Seq != ev.Seq {
		t.Fatalf("after the wake: %+v %v", got, err)
	}
	c, last := inv.EventsCommitted()
	if last != ev.Seq {
		t.Fatalf("newest committed %d, want %d", last, ev.Seq)
	}
	must(inv.AppendEvent(ctx, Event{Actor: "tok", Subject: "machine/m2", Action: "dhcp"}))
	<-c
}

func TestEventsCommittedStartsFromWhatIsOnDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metalhall.db")
	s := openTestStore(t, path, Options{})
	must(0, s.AppendEvents(ctx, []Event{{Actor: "tok", Subject: "machine/m1", Action: "dhcp"}, {Actor: "tok", Subject: "machine/m2", Action: "dhcp"}}))
	_, last := s.EventsCommitted()
	s.Close()
	again := openTestStore(t, path, Options{})
	defer again.Close()
	if _, got := again.EventsCommitted(); got != last || last == 0 {
		t.Fatalf("reopened: newest committed %d, want %d", got, last)
	}
}
