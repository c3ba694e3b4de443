package main

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/lab/redfish"
)

// quickStart is the README's local quick start: the code block after "To
// run the service on its own", one command a line, comments dropped.
func quickStart(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "To run the service on its own")
	if !ok {
		t.Fatal(`README.md: no "To run the service on its own" section`)
	}
	_, block, ok := strings.Cut(after, "```\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md: the quick start has no code block")
	}
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		l, _, _ = strings.Cut(l, "#")
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

var ipv4 = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b`)

// TestReadmeQuickStartStaysOnLoopback runs the README's quick start as a
// newcomer types it, against an in-process service (power sync off) and
// the BMC emulators it starts, and checks that the manifest's BMCs and
// every address named are loopback: trying metalhall sends nothing to
// another machine. The emulators listen on ports the test holds rather
// than the README's 8000-8003 (other tests share this machine); the
// manifest's addresses are mapped to them one for one.
func TestReadmeQuickStartStaysOnLoopback(t *testing.T) {
	lines := quickStart(t)
	manifest, err := os.ReadFile("../../docs/manifest-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range append(lines, string(manifest)) {
		for _, a := range ipv4.FindAllString(text, -1) {
			if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
				// The manifest's comment shows a real rack's address, as an
				// example; it is not in any bmc entry.
				if !strings.Contains(text, "e.g.\n#   bmc: {address: "+a) {
					t.Errorf("the quick start names %s, which is not a loopback address", a)
				}
			}
		}
	}
	bmcAddr := regexp.MustCompile(`(?m)^\s+bmc: \{address: "([^"]+)"`)
	var addrs []string
	for _, m := range bmcAddr.FindAllStringSubmatch(string(manifest), -1) {
		u, err := url.Parse(m[1])
		if err != nil || !isLoopbackHost(u.Hostname()) {
			t.Fatalf("manifest BMC %q is not on loopback", m[1])
		}
		addrs = append(addrs, u.Host)
	}
	if len(addrs) == 0 {
		t.Fatal("no BMC addresses found in docs/manifest-example.yaml")
	}

	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	var fleet *redfish.Fleet
	dir := t.TempDir()
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case f[0] == "bin/metalhall-lab":
			if len(f) != 5 || f[1] != "bmc" || f[2] != "-n" || f[4] != "&" {
				t.Fatalf("README: unexpected lab line %q", l)
			}
			n, _ := strconv.Atoi(f[3])
			if n != len(addrs) {
				t.Fatalf("README starts %d BMC emulators; the manifest has %d BMCs", n, len(addrs))
			}
			fleet, err = redfish.StartFleet("127.0.0.1", n, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(fleet.Close)
			m := string(manifest)
			for i, a := range addrs {
				// `metalhall-lab bmc` numbers its ports from 8000.
				if a != "127.0.0.1:"+strconv.Itoa(8000+i) {
					t.Fatalf("manifest BMC %d is %s; metalhall-lab bmc serves it on 127.0.0.1:%d", i, a, 8000+i)
				}
				m = strings.Replace(m, "http://"+a+`"`, "http://"+fleet.BMCs[i].Addr+`"`, 1)
			}
			if err := os.WriteFile(filepath.Join(dir, "manifest.yaml"), []byte(m), 0o600); err != nil {
				t.Fatal(err)
			}
		case f[0] == "export":
			// The token: the runner passes the service's.
		case f[0] == "bin/metalhall":
			args := f[1:]
			for i, a := range args {
				if a == "docs/manifest-example.yaml" {
					if fleet == nil {
						t.Fatal("README imports the manifest before starting its BMCs")
					}
					args[i] = filepath.Join(dir, "manifest.yaml")
				} else if strings.HasPrefix(a, "docs/") {
					args[i] = "../../" + a // the README runs from the repository's root
				}
			}
			r.ok(args...)
		default:
			t.Fatalf("README quick start: a line the test does not know: %q", l)
		}
	}
	if fleet == nil {
		t.Fatal("the README quick start starts no BMC emulators")
	}
	if !fleet.BMCs[0].Power() {
		t.Error("machine power --action on did not reach the first emulated BMC")
	}
	for i, b := range fleet.BMCs[1:] {
		if b.Requests() != 0 {
			t.Errorf("BMC %d got %d requests: nothing in the quick start should touch it (power sync is off)", i+2, b.Requests())
		}
	}
}
