package main

import (
	"strings"
	"testing"
)

func TestTenantAssignAndUnassignFromTheCLI(t *testing.T) {
	url, tok := startService(t)
	c := cliRunner{t, url, tok}
	c.ok("site", "create", "s1")
	c.ok("hall", "create", "--site", "s1", "h1")
	c.ok("phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "1000")
	c.ok("rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "44", "r1")
	c.ok("tenant", "create", "bank-x")
	if out := c.ok("tenant", "assign", "--tenant", "bank-x", "--rack", "r1"); !strings.Contains(out, "rack r1 assigned to tenant bank-x") {
		t.Fatalf("assign: %s", out)
	}
	if code, _, errs := c.run("tenant", "unassign", "--tenant", "bank-x", "--rack", "r1", "--machine", "m1"); code != exitUsage || !strings.Contains(errs, "exactly one of") {
		t.Fatalf("unassign with both: %d %s", code, errs)
	}
	if out := c.ok("tenant", "unassign", "--tenant", "bank-x", "--rack", "r1"); !strings.Contains(out, "rack r1 taken back from tenant bank-x") {
		t.Fatalf("unassign: %s", out)
	}
	if out := c.ok("rack", "show", "-o", "json", "r1"); strings.Contains(out, "bank-x") {
		t.Fatalf("rack still with the tenant: %s", out)
	}
	if out := c.ok("token", "create", "--role", "technician", "--ttl", "7d"); !strings.Contains(out, "expires") {
		t.Fatalf("token create --ttl: %s", out)
	}
}
