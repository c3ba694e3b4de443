package main

import (
	"bytes"
	"flag"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/cmd/metalhall/internal/clidoc"
)

// exitStatuses are the exit statuses scripts can branch on, as the
// reference and the man page list them (docs/cli.md says the same in
// prose; scripting_test.go checks them for every command).
var exitStatuses = []clidoc.ExitStatus{
	{Code: 0, Meaning: "success"},
	{Code: exitError, Meaning: "the request was refused or failed"},
	{Code: exitUsage, Meaning: "bad command line, or input the service refused as invalid (a value, a manifest, a checksum, a file that cannot be read)"},
	{Code: exitUnreachable, Meaning: "no service answered at the URL, or its TLS certificate is not the one trusted"},
	{Code: exitAuth, Meaning: "the token is missing, invalid or not allowed to do this"},
	{Code: exitNotFound, Meaning: "the named object does not exist, or belongs to another tenant; also a filter naming an unknown rack or tenant"},
	{Code: exitConflict, Meaning: "refused by a lifecycle, placement or power rule, or the name is taken"},
}

// docsGenerator is the command that regenerates the reference and the man
// pages; the files name it, and the test that compares them says it.
const docsGenerator = "`make docs`"

// reference is the CLI reference of app (one made by newApp).
func reference(app *cli.App) clidoc.Doc {
	required, _ := app.Metadata[requiredFlagsKey].(requiredFlags)
	return clidoc.Doc{App: app, Exit: exitStatuses, Generator: docsGenerator,
		Required: func(f cli.Flag) bool { return required[f] }}
}

var updateDocs = flag.Bool("update-docs", false, "write docs/cli-reference.md and man/man1/ from the command table instead of comparing them (make docs)")

// referenceFiles are the generated files, by path from the repository
// root, and the folder of man pages (whose other metalhall pages are
// stale).
func referenceFiles() map[string][]byte {
	d := reference(newApp(io.Discard, io.Discard))
	files := map[string][]byte{"docs/cli-reference.md": d.Markdown()}
	for name, page := range d.ManPages() {
		files[path.Join(manDir, name)] = page
	}
	return files
}

const (
	repoRoot = "../.."
	manDir   = "man/man1"
)

// TestCLIReferenceIsTheCommandTable fails when docs/cli-reference.md or a
// man page is not what the command table gives today — a command, flag or
// usage changed without `make docs` — or when a page is left of a command
// that is gone. With -update-docs it writes them instead (make docs).
func TestCLIReferenceIsTheCommandTable(t *testing.T) {
	want := referenceFiles()
	stale, err := filepath.Glob(filepath.Join(repoRoot, manDir, "metalhall*.1"))
	if err != nil {
		t.Fatal(err)
	}
	if *updateDocs {
		if err := os.MkdirAll(filepath.Join(repoRoot, manDir), 0o755); err != nil {
			t.Fatal(err)
		}
		for p, data := range want {
			if err := os.WriteFile(filepath.Join(repoRoot, p), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range stale {
			if _, ok := want[path.Join(manDir, filepath.Base(s))]; !ok {
				if err := os.Remove(s); err != nil {
					t.Fatal(err)
				}
			}
		}
		return
	}
	const fix = "run `make docs` and commit the result"
	for _, p := range slices.Sorted(maps.Keys(want)) {
		got, err := os.ReadFile(filepath.Join(repoRoot, p))
		if err != nil {
			t.Errorf("%s: %v: %s", p, err, fix)
			continue
		}
		if !bytes.Equal(got, want[p]) {
			t.Errorf("%s is not what the command table gives (first difference at line %d): %s", p, firstDiffLine(got, want[p]), fix)
		}
	}
	for _, s := range stale {
		if _, ok := want[path.Join(manDir, filepath.Base(s))]; !ok {
			t.Errorf("%s documents a command that no longer exists: %s", s, fix)
		}
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// TestManPagesRenderWithoutWarnings formats every generated page with man
// (groff with all warnings on) as man(1) would show it.
func TestManPagesRenderWithoutWarnings(t *testing.T) {
	if _, err := exec.LookPath("man"); err != nil {
		t.Skip("man is not installed (Debian package man-db)")
	}
	for p, data := range referenceFiles() {
		if !strings.HasSuffix(p, ".1") {
			continue
		}
		f := filepath.Join(t.TempDir(), filepath.Base(p))
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("man", "--warnings=all", "-l", f)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "LANG=C.UTF-8")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v\n%s", p, err, stderr.String())
			continue
		}
		if !bytes.Contains(out, []byte("NAME")) {
			t.Errorf("man -l %s rendered no NAME section:\n%s", p, out)
		}
	}
}
