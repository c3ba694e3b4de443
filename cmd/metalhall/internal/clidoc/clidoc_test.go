package clidoc

import (
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestTroffTextCannotBecomeARequestOrAHyphen(t *testing.T) {
	for in, want := range map[string]string{
		`--data-dir`:        `\-\-data\-dir`,
		`C:\x`:              `C:\ex`,
		"power → budget":    `power \[u2192] budget`,
		"`metalhall serve`": `\fBmetalhall serve\fR`,
		"an ` alone":        "an ` alone",
	} {
		if got := manText(in); got != want {
			t.Errorf("manText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := manLines(".SH x\n'quoted\nplain"); got != "\\&.SH x\n\\&'quoted\nplain" {
		t.Errorf("manLines: %q", got)
	}
}

func TestIndentedLinesAreKeptAsWritten(t *testing.T) {
	got := paragraphs("Runs the thing.\nReally.\n\nExample:\n  a --b \\\n    c\n\nAfter.")
	want := []block{
		{lines: []string{"Runs the thing.", "Really."}},
		{lines: []string{"Example:"}},
		{lines: []string{"a --b \\", "  c"}, pre: true},
		{lines: []string{"After."}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d blocks %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].pre != want[i].pre || strings.Join(got[i].lines, "|") != strings.Join(want[i].lines, "|") {
			t.Errorf("block %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestHiddenCommandsAndFlagsAreLeftOut(t *testing.T) {
	app := &cli.App{Name: "x", Usage: "u", Commands: []*cli.Command{
		{Name: "shown", Usage: "a command", Flags: []cli.Flag{
			&cli.StringFlag{Name: "seen", Value: "v", EnvVars: []string{"X_SEEN"}, Required: true},
			&cli.BoolFlag{Name: "unseen", Hidden: true},
		}},
		{Name: "secret", Hidden: true},
	}}
	md := string(Doc{App: app, Generator: "gen"}.Markdown())
	if strings.Contains(md, "secret") || strings.Contains(md, "unseen") {
		t.Errorf("hidden things documented:\n%s", md)
	}
	if !strings.Contains(md, "| `--seen value` | required | environment: `X_SEEN` |") {
		t.Errorf("flag row missing:\n%s", md)
	}
	pages := Doc{App: app, Generator: "gen"}.ManPages()
	if _, ok := pages["x-secret.1"]; ok || pages["x-shown.1"] == nil || pages["x.1"] == nil {
		t.Errorf("pages: %v", len(pages))
	}
}
