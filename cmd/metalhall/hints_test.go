package main

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A command named in a hint, a usage text or the docs, where people copy
// it from: after a backquote, a single quote, a parenthesis or bin/. (A
// double quote opens Go strings such as "metalhall agent token", which are
// not commands.)
var namedCommand = regexp.MustCompile("(?:[`'(]|bin/)metalhall ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")

// TestHintsNameOnlyCommandsThatExist reads the service's and the CLI's
// sources and the docs for commands they tell people to run, and checks
// each against the command table.
func TestHintsNameOnlyCommandsThatExist(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	var files []string
	for _, root := range []string{"../../api", "../../inventory", "../../provisioner", "../../service", "../../images", "../../bmc", "../../netboot", "../../agent", ".", "../../docs"} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".md") || strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go")) {
				files = append(files, p)
			}
			return nil
		})
	}
	files = append(files, "../../README.md")
	checked := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range namedCommand.FindAllStringSubmatch(string(data), -1) {
			top := findCommand(app.Commands, m[1])
			if top == nil {
				t.Errorf("%s names 'metalhall %s', which is no command", f, m[1])
				continue
			}
			checked++
			if len(top.Subcommands) > 0 && m[2] != "" && findCommand(top.Subcommands, m[2]) == nil {
				t.Errorf("%s names 'metalhall %s %s', which is no command", f, m[1], m[2])
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d commands named in %d files: is the pattern still right?", checked, len(files))
	}
}
