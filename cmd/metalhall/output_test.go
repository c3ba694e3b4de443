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
