package api

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// A client waiting on a machine's job is answered when the job commits a
// change, not by polling; bad wait parameters are refused.
func TestMachineJobLongPollWakesOnTheJobsCommit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	j := must(f.inv.StartJob(ctx, inventory.Job{Machine: "ma", Kind: inventory.JobCommission,
		Steps: []inventory.JobStep{{Name: "bmc-check"}, {Name: "set-pxe"}}}, inventory.MachineCommissioning))
	since := url.QueryEscape(j.UpdatedAt.Format(time.RFC3339Nano))
	for _, q := range []string{"?wait=soon&since=" + since, "?wait=-1s&since=" + since, "?wait=30s", "?wait=30s&since=yesterday"} {
		if code, body := f.do("admin", "GET", "/api/v1/machines/ma/job"+q, nil); code != 400 {
			t.Errorf("%s: %d %s", q, code, body)
		}
	}
	// Already changed since what the caller saw: answered at once.
	code, body := f.do("admin", "GET", "/api/v1/machines/ma/job?wait=1m&since=2000-01-01T00:00:00Z", nil)
	if code != 200 {
		t.Fatalf("changed job: %d %s", code, body)
	}

	woken := make(chan struct{})
	go func() {
		f.srv.waitJobChange(ctx, "ma", j.UpdatedAt, time.Hour)
		close(woken)
	}()
	select {
	case <-woken:
		t.Fatal("answered before the job changed")
	default:
	}
	must(f.inv.UpdateJobOnly(ctx, j.ID, func(j *inventory.Job) error { j.Steps[0].State = inventory.StepDone; return nil }))
	<-woken // a missed wake hangs here until the test times out

	code, body = f.do("admin", "GET", "/api/v1/machines/ma/job?wait=1m&since="+since, nil)
	var got Job
	if code != 200 || json.Unmarshal(body, &got) != nil || got.Steps[0].State != inventory.StepDone {
		t.Fatalf("after the change: %d %s", code, body)
	}
	// Another tenant still sees nothing, waiting or not.
	if code, _ := f.do("tenant-b", "GET", "/api/v1/machines/ma/job?wait=1m&since="+since, nil); code != 404 {
		t.Errorf("other tenant: %d", code)
	}
}
