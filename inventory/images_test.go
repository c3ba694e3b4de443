package inventory

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func newImageTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "metalhall.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestImageCatalogue(t *testing.T) {
	s := newImageTestStore(t)
	img := Image{Name: "ubuntu-24.04", Format: "raw.zst", SHA256: strings.Repeat("a", 64), Size: 10,
		UncompressedSHA256: strings.Repeat("b", 64), UncompressedSize: 20, MappedBytes: 15}
	got, err := s.CreateImage(ctx, img)
	if err != nil || got.CreatedAt.IsZero() {
		t.Fatalf("create: %+v %v", got, err)
	}
	if _, err := s.CreateImage(ctx, img); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := s.CreateImage(ctx, Image{Name: "t", Tenant: "nobody"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	if err := ValidateImageName("../etc"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ValidateImageName: %v", err)
	}
	one, err := s.Image(ctx, "ubuntu-24.04")
	if err != nil || *one != *got {
		t.Fatalf("Image = %+v %v", one, err)
	}
	all, err := s.Images(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("Images = %v %v", all, err)
	}
}

func TestDeleteImageRefusedWhileUsed(t *testing.T) {
	s := newImageTestStore(t)
	hallFixture(t, s)
	must(s.CreateImage(ctx, Image{Name: "ubuntu"}))
	must(s.EnrollMachine(ctx, machine("gpu-01", "r1", 1, "52:54:00:00:00:01")))
	must(s.UpdateMachine(ctx, "gpu-01", func(m *Machine) error { m.Image = "ubuntu"; return nil }))
	if n, err := s.ImageUsers(ctx, "ubuntu"); err != nil || n != 1 {
		t.Fatalf("ImageUsers = %d %v", n, err)
	}
	err := s.DeleteImage(ctx, "ubuntu")
	var ce *ConflictError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `"gpu-01"`) {
		t.Fatalf("delete while used: %v, want a conflict naming gpu-01", err)
	}
	must(s.UpdateMachine(ctx, "gpu-01", func(m *Machine) error { m.Image = ""; return nil }))
	if err := s.DeleteImage(ctx, "ubuntu"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, "ubuntu"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}
