package main

import (
	"strings"
	"testing"
)

const stream = `{"Action":"run","Package":"p/a","Test":"TestOK"}
{"Action":"output","Package":"p/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p/a","Test":"TestOK"}
{"Action":"run","Package":"p/a","Test":"TestVM"}
{"Action":"output","Package":"p/a","Test":"TestVM","Output":"    qemu_test.go:78: qemu-system-x86_64 not installed (Debian: apt install qemu-system-x86)\n"}
{"Action":"output","Package":"p/a","Test":"TestVM","Output":"--- SKIP: TestVM (0.00s)\n"}
{"Action":"skip","Package":"p/a","Test":"TestVM"}
{"Action":"run","Package":"p/a","Test":"TestNS"}
{"Action":"output","Package":"p/a","Test":"TestNS","Output":"    netns_test.go:13: skipping: network namespaces need root\n"}
{"Action":"skip","Package":"p/a","Test":"TestNS"}
{"Action":"output","Package":"p/a","Output":"ok  \tp/a\t0.1s\n"}
{"Action":"pass","Package":"p/a"}
`

// TestSkipsForWhatMakeTestProvidesFail: a skip for a package make test
// installs fails the run; one for root fails it only when running as root;
// ALLOW_SKIPS lists them without failing.
func TestSkipsForWhatMakeTestProvidesFail(t *testing.T) {
	for _, c := range []struct {
		name        string
		root, allow bool
		code        int
		want        []string
	}{
		{"root", true, false, 1, []string{"FAIL: 2 tests skipped", "3 tests in 1 packages: 1 passed, 0 failed, 2 skipped",
			"TestVM [missing a package make test installs]: qemu-system-x86_64 not installed", "TestNS [needs root, and runs as root]"}},
		{"not root", false, false, 1, []string{"FAIL: 1 tests skipped", "TestNS [needs root]: skipping: network namespaces need root"}},
		{"allowed", true, true, 0, []string{"2 tests skipped for want of what make test provides (ALLOW_SKIPS=1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out strings.Builder
			if code := run(strings.NewReader(stream), &out, c.root, c.allow); code != c.code {
				t.Errorf("exit %d, want %d:\n%s", code, c.code, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// TestFailuresFailAndShowTheirOutput: a failed test's output is printed
// and fails the run, as does go test's own non-zero exit.
func TestFailuresFailAndShowTheirOutput(t *testing.T) {
	in := `{"Action":"output","Package":"p/b","Test":"TestBad","Output":"    b_test.go:9: got 1, want 2\n"}
{"Action":"fail","Package":"p/b","Test":"TestBad"}
{"Action":"output","Package":"p/b","Output":"FAIL\tp/b\t0.1s\n"}
`
	var out strings.Builder
	if code := run(strings.NewReader(in), &out, true, false); code != 1 || !strings.Contains(out.String(), "got 1, want 2") ||
		!strings.Contains(out.String(), "FAILED p/b TestBad") || !strings.Contains(out.String(), "FAIL\tp/b") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	out.Reset()
	if code := run(strings.NewReader(`{"Action":"go-test-exit"}`+"\n"), &out, true, false); code != 1 {
		t.Fatalf("go test's failure not passed on: %d\n%s", code, out.String())
	}
}

// TestOptInSkipsAreNotFailures: a test that runs only when asked for with
// an environment variable (the PXE benchmark, sushy-tools) skips without
// failing make test, even when its message names root or Debian packages.
func TestOptInSkipsAreNotFailures(t *testing.T) {
	for _, reason := range []string{
		"PXE benchmark: set METALHALL_PXE_BENCH=1 and run as root (bench/pxe/run.sh)",
		"METALHALL_SUSHY_TOOLS is not set: point it at a sushy-tools source tree (needs the Debian packages python3-flask ...)",
	} {
		if c := classify(reason, true); c != "opt-in" || provided(c) {
			t.Errorf("%q: class %q", reason, c)
		}
	}
	if c := classify("needs root", true); !provided(c) {
		t.Errorf("a root skip under root: class %q", c)
	}
}
