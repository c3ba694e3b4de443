// Command testsummary reads `go test -json` on stdin, prints what plain
// `go test` would (each package's result, the output of failed tests) and
// ends with a summary of the tests run, passed, failed and skipped, each
// skip with its reason. It fails when a test failed, when go test did, or
// when a test skipped for a reason `make test` is there to provide: a
// Debian package it installs, or root when it runs as root. ALLOW_SKIPS=1
// lists those skips without failing (a developer without root or the
// packages).
//
// `make test` pipes go test through it; a line {"Action":"go-test-exit"}
// after go test's own output says go test exited non-zero.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// Why a test skipped, as the tests word it (t.Skip messages).
var (
	needsRoot = regexp.MustCompile(`(?i)\b(needs?|as|only) root\b|\broot only\b`)
	missing   = regexp.MustCompile(`(?i)debian|apt install|not installed|not found|missing|no readable|executable file`)
	shortMode = regexp.MustCompile(`-short|short mode`)
	// optIn: a test that runs only when the person running it asks for
	// it with an environment variable (a benchmark, a peer make test does
	// not install). It is not something make test should have provided.
	optIn = regexp.MustCompile(`\bMETALHALL_[A-Z0-9_]+( is not set|=)`)
)

type skip struct{ pkg, test, reason, class string }

// classify says whether a skip is one make test should have prevented.
func classify(reason string, root bool) string {
	switch {
	case shortMode.MatchString(reason):
		return "short"
	case optIn.MatchString(reason):
		return "opt-in"
	case needsRoot.MatchString(reason):
		if root {
			return "needs root, and runs as root"
		}
		return "needs root"
	case missing.MatchString(reason):
		return "missing a package make test installs"
	}
	return "other"
}

func provided(class string) bool {
	return class == "needs root, and runs as root" || class == "missing a package make test installs"
}

type key struct{ pkg, test string }

func main() {
	root := os.Geteuid() == 0
	allow := os.Getenv("ALLOW_SKIPS") == "1"
	code := run(os.Stdin, os.Stdout, root, allow)
	os.Exit(code)
}

func run(in io.Reader, out io.Writer, root, allow bool) int {
	output := map[key]*strings.Builder{}
	var passed, failed, goTestFailed int
	var skips []skip
	var failedTests []string
	pkgs := map[string]bool{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(out, "%s\n", line) // not test2json: go vet, build errors
			continue
		}
		if e.Action == "go-test-exit" {
			goTestFailed++
			continue
		}
		if e.Package != "" {
			pkgs[e.Package] = true
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output", "build-output":
			if e.Test == "" {
				// Package lines: "ok  pkg 1.2s", "FAIL pkg", build errors.
				if !strings.HasPrefix(e.Output, "=== ") && !strings.HasPrefix(e.Output, "--- ") &&
					e.Output != "PASS\n" && !strings.HasPrefix(e.Output, "    ") {
					fmt.Fprint(out, e.Output)
				}
				continue
			}
			b := output[k]
			if b == nil {
				b = &strings.Builder{}
				output[k] = b
			}
			b.WriteString(e.Output)
		case "pass":
			if e.Test != "" {
				passed++
				delete(output, k)
			}
		case "fail", "build-fail":
			if e.Test == "" {
				continue
			}
			failed++
			failedTests = append(failedTests, e.Package+" "+e.Test)
			if b := output[k]; b != nil {
				fmt.Fprint(out, b.String())
			}
			delete(output, k)
		case "skip":
			if e.Test == "" {
				continue // a package without tests
			}
			reason := skipReason(output[k])
			skips = append(skips, skip{e.Package, e.Test, reason, classify(reason, root)})
			delete(output, k)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testsummary: reading go test output: %v\n", err)
		return 1
	}

	sort.Slice(skips, func(i, j int) bool { return skips[i].pkg+skips[i].test < skips[j].pkg+skips[j].test })
	fmt.Fprintf(out, "\n== test summary: %d tests in %d packages: %d passed, %d failed, %d skipped\n",
		passed+failed+len(skips), len(pkgs), passed, failed, len(skips))
	var unprovided []skip
	for _, s := range skips {
		fmt.Fprintf(out, "   skipped %s %s [%s]: %s\n", strings.TrimPrefix(s.pkg, "github.com/metalhall/metalhall/"), s.test, s.class, s.reason)
		if provided(s.class) {
			unprovided = append(unprovided, s)
		}
	}
	for _, f := range failedTests {
		fmt.Fprintf(out, "   FAILED %s\n", strings.TrimPrefix(f, "github.com/metalhall/metalhall/"))
	}
	code := 0
	if failed > 0 || goTestFailed > 0 {
		fmt.Fprintln(out, "FAIL: go test failed")
		code = 1
	}
	if len(unprovided) > 0 {
		if allow {
			fmt.Fprintf(out, "%d tests skipped for want of what make test provides (ALLOW_SKIPS=1: not a failure)\n", len(unprovided))
		} else {
			fmt.Fprintf(out, "FAIL: %d tests skipped for want of what make test provides (a Debian package it installs, or root while running as root): "+
				"run make test as root so it can install them, or ALLOW_SKIPS=1 make test to accept the skips\n", len(unprovided))
			code = 1
		}
	}
	return code
}

// skipReason is the message the test gave t.Skip: its output's last
// lines, without the "--- SKIP" line and file:line prefixes.
func skipReason(b *strings.Builder) string {
	if b == nil {
		return "(no reason given)"
	}
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		if i := strings.Index(l, ".go:"); i > 0 {
			if j := strings.Index(l[i:], ": "); j > 0 {
				l = l[i+j+2:]
			}
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return "(no reason given)"
	}
	return lines[len(lines)-1]
}
