package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpenRoundTripAndBinding(t *testing.T) {
	dir := t.TempDir()
	key, created, err := LoadOrCreateKey(filepath.Join(dir, "seal.key"))
	if err != nil || !created {
		t.Fatalf("create key: %v %v", created, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "seal.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	again, created, err := LoadOrCreateKey(filepath.Join(dir, "seal.key"))
	if err != nil || created || !bytes.Equal(key, again) {
		t.Fatal("second load did not reuse the key")
	}
	s, _ := New(key)
	sealed, err := s.Seal([]byte("hunter2"), []byte("bmc/m1"))
	if err != nil || bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatalf("seal: %v", err)
	}
	if pt, err := s.Open(sealed, []byte("bmc/m1")); err != nil || string(pt) != "hunter2" {
		t.Fatalf("open: %q %v", pt, err)
	}
	// Bound to its record: moving it to another machine does not open.
	if _, err := s.Open(sealed, []byte("bmc/m2")); !errors.Is(err, ErrOpen) {
		t.Fatalf("open under other name: %v", err)
	}
	// Tampering and another key are refused.
	sealed[len(sealed)-1] ^= 1
	if _, err := s.Open(sealed, []byte("bmc/m1")); !errors.Is(err, ErrOpen) {
		t.Fatal("tampered value opened")
	}
	other, _ := New(bytes.Repeat([]byte{7}, KeySize))
	sealed2, _ := s.Seal([]byte("x"), nil)
	if _, err := other.Open(sealed2, nil); !errors.Is(err, ErrOpen) {
		t.Fatal("opened with the wrong key")
	}
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
	os.WriteFile(filepath.Join(dir, "bad.key"), []byte("short"), 0o600)
	if _, _, err := LoadOrCreateKey(filepath.Join(dir, "bad.key")); err == nil {
		t.Fatal("truncated key file accepted")
	}
}
