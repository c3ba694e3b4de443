package main

import (
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestEveryFlagSaysWhatItIsFor walks the command tree: --help is where
// people learn a flag, and a flag listed with no text teaches nothing.
func TestEveryFlagSaysWhatItIsFor(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	check := func(where string, flags []cli.Flag) {
		for _, f := range flags {
			if usage(f) == "" {
				t.Errorf("%s --%s has no usage text", where, f.Names()[0])
			}
		}
	}
	check("metalhall", app.Flags)
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := strings.TrimSpace(prefix + " " + c.Name)
			check(name, c.Flags)
			walk(name, c.Subcommands)
		}
	}
	walk("metalhall", app.Commands)
}

// usage reads a flag's Usage field, whatever its type (altsrc wraps them).
func usage(f cli.Flag) string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.GetUsage()
	}
	v := reflect.Indirect(reflect.ValueOf(f))
	if u := v.FieldByName("Usage"); u.IsValid() {
		return u.String()
	}
	return ""
}
