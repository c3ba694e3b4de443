package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/service"
	"github.com/metalhall/metalhall/service/servicetest"
)

func TestCLIPinsTheServiceCertificate(t *testing.T) {
	rs := servicetest.Start(t, "", func(c *service.Config) { c.TLS.Force = true })
	url := rs.AdminURL()
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("admin URL %s", url)
	}
	fp, err := os.ReadFile(filepath.Join(rs.Dir, service.FingerprintFile))
	if err != nil {
		t.Fatal(err)
	}
	cli := cliRunner{t, url, rs.Token}

	// The right pin, from the flag and from the environment.
	cli.ok("--tls-fingerprint", strings.TrimSpace(string(fp)), "site", "create", "pinned")
	t.Setenv("METALHALL_TLS_FINGERPRINT", strings.ToUpper(strings.TrimSpace(string(fp))))
	if out := cli.ok("site", "list"); !strings.Contains(out, "pinned") {
		t.Fatalf("site list over TLS:\n%s", out)
	}
	t.Setenv("METALHALL_TLS_FINGERPRINT", "")

	// The certificate as a CA file works too.
	cli.ok("--ca-file", filepath.Join(rs.Dir, service.GeneratedCertFile), "site", "list")

	// A wrong pin: refused before the token is sent, with a message that
	// says what to compare.
	wrong := strings.Repeat("0", 64)
	code, _, stderr := cli.run("--tls-fingerprint", wrong, "site", "create", "never")
	if code != exitUnreachable || !strings.Contains(stderr, "not the pinned "+wrong) || !strings.Contains(stderr, "tls.fingerprint") {
		t.Fatalf("wrong pin: exit %d: %s", code, stderr)
	}
	// No pin at all: the self-signed certificate is not trusted, and the
	// message says how to trust it.
	code, _, stderr = cli.run("site", "list")
	if code != exitUnreachable || !strings.Contains(stderr, "--tls-fingerprint") {
		t.Fatalf("no pin: exit %d: %s", code, stderr)
	}
	// A malformed pin is a usage error, and nothing is sent.
	code, _, stderr = cli.run("--tls-fingerprint", "abc", "site", "create", "never")
	if code != exitUsage || !strings.Contains(stderr, "64 hex digits") {
		t.Fatalf("malformed pin: exit %d: %s", code, stderr)
	}
	if out := cli.ok("--tls-fingerprint", strings.TrimSpace(string(fp)), "site", "list"); strings.Contains(out, "never") {
		t.Fatalf("a refused call created a site:\n%s", out)
	}
}
