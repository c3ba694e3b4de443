package main

import (
	"bytes"
	"strings"
	"testing"
)

// Names, reasons and agent messages come from the service, and some from
// machines: escape sequences in them must reach a terminal inert.
func TestControlCharactersAreNeutralisedInTables(t *testing.T) {
	var b bytes.Buffer
	hostile := "disk gone\x1b]0;owned\x07\x1b[2J\r\nfake row\tcol\u009b31m"
	printTable(&b, []string{"MACHINE", "REASON"}, [][]string{{"m1\x00", hostile}})
	printFields(&b, "reason", hostile)
	out := b.String()
	if strings.ContainsFunc(strings.ReplaceAll(out, "\n", ""), isControl) {
		t.Fatalf("control characters reach the terminal: %q", out)
	}
	for _, want := range []string{`\x1b]0;owned\x07\x1b[2J\x0d\x0afake row\x09col\x9b31m`, `m1\x00`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
	if got := strings.Count(out, "\n"); got != 3 {
		t.Errorf("%d lines, want 3 (header, row, field): %q", got, out)
	}
}

// A 250-character maintenance reason is clipped with an ellipsis in the
// machine table, and whole in -o json and in machine show.
func TestLongReasonsAreClippedInTablesOnly(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	importExampleRack(r)
	reason := strings.Repeat("PSU 2 lost input power; ", 10) + "end"
	r.ok("machine", "maintenance", "--on", "--reason", reason, "gpu-a01-01")

	table := r.ok("machine", "list")
	if strings.Contains(table, "end") || !strings.Contains(table, "…") {
		t.Fatalf("the REASON column is not clipped:\n%s", table)
	}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n") {
		if n := len([]rune(line)); n > 200 {
			t.Errorf("a table line of %d characters: %s", n, line)
		}
	}
	if js := r.ok("machine", "list", "-o", "json"); !strings.Contains(js, reason) {
		t.Errorf("-o json lacks the whole reason")
	}
	if show := r.ok("machine", "show", "gpu-a01-01"); !strings.Contains(show, reason) {
		t.Errorf("machine show lacks the whole reason:\n%s", show)
	}
}
