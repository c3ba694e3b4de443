package inventory

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
)

func TestEraseReportsAreKeptPerJobAndSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metalhall.db")
	s := openTestStore(t, path, Options{})
	hallFixture(t, s)
	enrollN(t, s, "r1", 2)
	must(s.CreateTenant(ctx, Tenant{Name: "bank-x"}))
	must(s.AssignMachineTenant(ctx, "r1-m01", "bank-x"))
	j1 := must(s.StartJob(ctx, Job{Machine: "r1-m01", Kind: JobRelease}, ""))

	if _, err := s.EraseReports(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("reports of an unknown machine: %v", err)
	}
	if _, err := s.RecordErase(ctx, EraseReport{Job: "job-999999"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("report for an unknown job: %v", err)
	}
	if got := must(s.EraseReports(ctx, "r1-m01")); len(got) != 0 {
		t.Errorf("reports before any erase: %+v", got)
	}
	// The job names the machine: a report cannot be filed under another.
	rep := must(s.RecordErase(ctx, EraseReport{Machine: "r1-m02", Job: j1.ID, Disks: []wire.EraseRecord{
		{Disk: "nvme0n1", Method: wire.EraseNVMeFormatUserData, Level: wire.LevelPurge, Result: wire.ErasePassed}}}))
	if rep.Machine != "r1-m01" || rep.Tenant != "bank-x" || rep.Reported.IsZero() || !rep.Passed() {
		t.Errorf("report %+v", rep)
	}
	if got := must(s.EraseReports(ctx, "r1-m02")); len(got) != 0 {
		t.Errorf("r1-m02 got r1-m01's report: %+v", got)
	}
	s.Close()

	s = openTestStore(t, path, Options{})
	defer s.Close()
	got := must(s.EraseReports(ctx, "r1-m01"))
	if len(got) != 1 || got[0].Job != j1.ID || got[0].Disks[0].Method != wire.EraseNVMeFormatUserData {
		t.Errorf("after reopen: %+v", got)
	}
	if r, err := s.EraseReport(ctx, "r1-m01", j1.ID); err != nil || r.Disks[0].Disk != "nvme0n1" {
		t.Errorf("one report: %+v %v", r, err)
	}
	if _, err := s.EraseReport(ctx, "r1-m01", "job-000042"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing report: %v", err)
	}
}

func TestEraseReportPassedNeedsEveryDisk(t *testing.T) {
	ok := wire.EraseRecord{Result: wire.ErasePassed}
	bad := wire.EraseRecord{Result: wire.EraseFailed}
	for _, tc := range []struct {
		disks []wire.EraseRecord
		want  bool
	}{{nil, false}, {[]wire.EraseRecord{ok}, true}, {[]wire.EraseRecord{ok, bad}, false}} {
		if got := (&EraseReport{Disks: tc.disks}).Passed(); got != tc.want {
			t.Errorf("%+v: passed %v", tc.disks, got)
		}
	}
}
