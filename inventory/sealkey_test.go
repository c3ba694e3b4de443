package inventory

import (
	"errors"
	"path/filepath"
	"testing"
)

// The first key is recorded; the same key passes again, also after a
// reopen; another key is refused and changes nothing.
func TestSealKeyIsRecordedOnceAndAnotherIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	inv := openTestStore(t, path, Options{})
	a, b := []byte("key-id-aaaaaaaaa"), []byte("key-id-bbbbbbbbb")
	if err := inv.CheckSealKey(ctx, a); err != nil {
		t.Fatalf("first key: %v", err)
	}
	if err := inv.CheckSealKey(ctx, a); err != nil {
		t.Fatalf("same key again: %v", err)
	}
	if err := inv.CheckSealKey(ctx, b); !errors.Is(err, ErrSealKeyMismatch) {
		t.Fatalf("another key: %v, want ErrSealKeyMismatch", err)
	}
	inv.Close()
	inv = openTestStore(t, path, Options{})
	defer inv.Close()
	if err := inv.CheckSealKey(ctx, b); !errors.Is(err, ErrSealKeyMismatch) {
		t.Fatalf("another key after a reopen: %v, want ErrSealKeyMismatch", err)
	}
	if err := inv.CheckSealKey(ctx, a); err != nil {
		t.Fatalf("the first key after a reopen: %v", err)
	}
}
