package inventory

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestHoldOutlivesReopenUntilLifted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metalhall.db")
	s := openTestStore(t, path, Options{})
	if s.Hold() != nil || s.CheckHold() != nil {
		t.Fatal("a new store is on hold")
	}
	if err := s.SetHold(ctx, Hold{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a hold without a reason: %v", err)
	}
	taken := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	if err := s.SetHold(ctx, Hold{Reason: "restored from a backup", BackupTakenAt: taken}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTestStore(t, path, Options{})
	defer s.Close()
	h := s.Hold()
	if h == nil || h.Reason != "restored from a backup" || !h.BackupTakenAt.Equal(taken) || h.Since.IsZero() {
		t.Fatalf("hold after reopen: %+v", h)
	}
	var held *HeldError
	if err := s.CheckHold(); !errors.As(err, &held) || !errors.Is(err, ErrConflict) {
		t.Fatalf("CheckHold: %v", err)
	}
	was := must(s.LiftHold(ctx))
	if was.Reason != h.Reason || s.Hold() != nil || s.CheckHold() != nil {
		t.Fatalf("lifted %+v, hold now %+v", was, s.Hold())
	}
	if _, err := s.LiftHold(ctx); !errors.Is(err, ErrConflict) {
		t.Fatalf("lifting no hold: %v", err)
	}
}
