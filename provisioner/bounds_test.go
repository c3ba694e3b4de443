package provisioner

import (
	"context"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// TestOversizedInspectionIsRefused: an inspection report far larger than
// any real server's (an 8-GPU HGX server's is about 16 KiB) is refused
// with 413 and not stored; one of normal size is.
func TestOversizedInspectionIsRefused(t *testing.T) {
	l := newLab(t, Config{})
	got := make(chan [2]error, 1)
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		big := hgx(8)
		big.System.Product = strings.Repeat("x", 2<<20)
		errBig := a.call("POST", wire.EndpointInspection, big, nil)
		errOK := a.call("POST", wire.EndpointInspection, hgx(8), nil)
		got <- [2]error{errBig, errOK}
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepInspect}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	errs := <-got
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "413") || !strings.Contains(errs[0].Error(), "MiB") {
		t.Fatalf("2 MiB inspection report: %v, want 413 naming the limit", errs[0])
	}
	if errs[1] != nil {
		t.Fatalf("normal inspection report: %v", errs[1])
	}
	report, _, err := l.inv.Inspection(context.Background(), "m1")
	if err != nil || len(report) > 1<<20 || strings.Contains(string(report), "xxxx") {
		t.Fatalf("the oversized report was stored (%d bytes, %v)", len(report), err)
	}
}
