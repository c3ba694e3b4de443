package pxe

import (
	"testing"
	"time"
)

// Each phase runs from the previous mark seen to its own line; a mark
// never seen (a baseline without read-back) leaves its phase out and the
// next phase starts where the last seen one ended; report ends at the
// server's record.
func TestSplitPhasesCutsAtEachMarkSeen(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	c := &serialClock{lines: []stampedLine{
		{at(20), "[    1.0] Linux version"},
		{at(24), "pxebench: init"},
		{at(24.5), "pxebench: modules loaded"},
		{at(24.7), "pxebench: address 10.97.0.10 from 10.97.0.1"},
		{at(24.7), "pxebench: writing http://10.97.0.1:8380/image.raw to /dev/vda"},
		{at(25.6), "pxebench: written"},
		{at(30), "pxebench: init"}, // a later boot: only the first line counts
	}}
	got := splitPhases(c, baselineMarks, t0, at(25.7))
	want := map[string]time.Duration{
		"fw+kernel": 24 * time.Second, "modules": 500 * time.Millisecond, "dhcp": 200 * time.Millisecond,
		"task": 0, "stream+write": 900 * time.Millisecond, "report": 100 * time.Millisecond,
	}
	if len(got) != len(want) {
		t.Errorf("phases %v, want %v", got, want)
	}
	for p, d := range want {
		if g, ok := got[p]; !ok || (g-d).Abs() > time.Millisecond {
			t.Errorf("%s = %v (seen %v), want %v", p, g, ok, d)
		}
	}
	if _, ok := got["read-back"]; ok {
		t.Error("read-back present for a baseline that did not verify")
	}
}
