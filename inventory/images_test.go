package inventory

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
)

func newImageTestStore(t *testing.T) *Store {
	t.Helper()
	s := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{NoSync: true})
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

func TestImageNamesAreScopedPerTenant(t *testing.T) {
	s := newImageTestStore(t)
	for _, tn := range []string{"ta", "tb"} {
		must(s.CreateTenant(ctx, Tenant{Name: tn}))
	}
	sha := strings.Repeat("a", 64) // the same bytes: blobs are shared
	must(s.CreateImage(ctx, Image{Name: "golden", Tenant: "ta", SHA256: sha}))
	if _, err := s.CreateImage(ctx, Image{Name: "golden", Tenant: "tb", SHA256: sha}); err != nil {
		t.Fatalf("tenant B creates the name tenant A uses: %v", err)
	}
	if _, err := s.CreateImage(ctx, Image{Name: "golden", Tenant: "ta"}); !errors.Is(err, ErrExists) {
		t.Fatalf("tenant A creates golden twice: %v, want ErrExists", err)
	}
	for _, tn := range []string{"ta", "tb"} {
		img, err := s.ImageFor(ctx, tn, "golden")
		if err != nil || img.Tenant != tn {
			t.Fatalf("ImageFor(%s, golden) = %+v, %v: want its own", tn, img, err)
		}
	}
	if _, err := s.ImageFor(ctx, "ta", "tb/golden"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tenant A names tb/golden: %v, want not found", err)
	}
	var amb *AmbiguousImageError
	if _, err := s.ImageForStaff(ctx, "golden"); !errors.As(err, &amb) || !errors.Is(err, ErrConflict) || len(amb.Refs) != 2 {
		t.Fatalf("staff name golden, which two tenants use: %v, want an ambiguity naming both", err)
	}
	// A shared image of the name: each tenant's own still wins for it,
	// staff's bare name is the shared one, and a third tenant sees it.
	must(s.CreateImage(ctx, Image{Name: "golden"}))
	must(s.CreateTenant(ctx, Tenant{Name: "tc"}))
	for tn, want := range map[string]string{"ta": "ta", "tb": "tb", "tc": ""} {
		if img, err := s.ImageFor(ctx, tn, "golden"); err != nil || img.Tenant != want {
			t.Errorf("ImageFor(%s, golden) = %+v, %v, want tenant %q", tn, img, err, want)
		}
	}
	if img, err := s.ImageForStaff(ctx, "golden"); err != nil || img.Tenant != "" {
		t.Errorf("staff name golden with a shared one: %+v, %v", img, err)
	}
	must(s.CreateImage(ctx, Image{Name: "only-tb", Tenant: "tb"}))
	if img, err := s.ImageForStaff(ctx, "only-tb"); err != nil || img.Ref() != "tb/only-tb" {
		t.Errorf("staff name a bare name one tenant uses: %+v, %v", img, err)
	}
	if err := s.DeleteImage(ctx, "ta/golden"); err != nil {
		t.Fatal(err)
	}
	if img, err := s.ImageFor(ctx, "ta", "golden"); err != nil || img.Tenant != "" {
		t.Errorf("after deleting its own, tenant A's golden = %+v, %v: want the shared one", img, err)
	}
	if _, err := s.Image(ctx, "tb/golden"); err != nil {
		t.Errorf("tenant B's golden after A deleted its own: %v", err)
	}
}

// TestImageStoredUnderTheOldKeyIsStillFound writes a private image the way
// a database from before scoped names did (under its bare name).
func TestImageStoredUnderTheOldKeyIsStillFound(t *testing.T) {
	s := newImageTestStore(t)
	hallFixture(t, s)
	must(s.CreateTenant(ctx, Tenant{Name: "ta"}))
	must(s.CreateTenant(ctx, Tenant{Name: "tb"}))
	old := Image{Name: "legacy", Tenant: "ta", SHA256: strings.Repeat("c", 64)}
	if err := s.update(func(tx kv.Tx) error { return putJSON(bkt(tx, bImages), []byte(old.Name), old) }); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"legacy", "ta/legacy"} {
		if img, err := s.Image(ctx, ref); err != nil || img.Tenant != "ta" {
			t.Errorf("Image(%s) = %+v, %v", ref, img, err)
		}
	}
	if img, err := s.ImageFor(ctx, "ta", "legacy"); err != nil || img.Tenant != "ta" {
		t.Errorf("its tenant finds the old image: %+v, %v", img, err)
	}
	if _, err := s.ImageFor(ctx, "tb", "legacy"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant finds the old image: %v", err)
	}
	if _, err := s.Image(ctx, "tb/legacy"); !errors.Is(err, ErrNotFound) {
		t.Errorf("tb/legacy finds ta's old image: %v", err)
	}
	if _, err := s.CreateImage(ctx, Image{Name: "legacy", Tenant: "ta"}); !errors.Is(err, ErrExists) {
		t.Errorf("its tenant creates the old image's name again: %v, want ErrExists", err)
	}
	if _, err := s.CreateImage(ctx, Image{Name: "legacy", Tenant: "tb"}); err != nil {
		t.Errorf("another tenant creates the old image's name: %v", err)
	}
	// A machine provisioned before the change names the image by its old
	// key; it still counts as a user.
	must(s.EnrollMachine(ctx, machine("gpu-01", "r1", 1, "52:54:00:00:00:01")))
	must(s.UpdateMachine(ctx, "gpu-01", func(m *Machine) error { m.Image = "legacy"; return nil }))
	if n, err := s.ImageUsers(ctx, "ta/legacy"); err != nil || n != 1 {
		t.Errorf("ImageUsers(ta/legacy) = %d, %v", n, err)
	}
	if err := s.DeleteImage(ctx, "ta/legacy"); !errors.Is(err, ErrConflict) {
		t.Errorf("delete the old image while used: %v", err)
	}
	must(s.UpdateMachine(ctx, "gpu-01", func(m *Machine) error { m.Image = ""; return nil }))
	if err := s.DeleteImage(ctx, "ta/legacy"); err != nil {
		t.Fatal(err)
	}
	if img, err := s.Image(ctx, "tb/legacy"); err != nil || img.Tenant != "tb" {
		t.Errorf("tb/legacy after ta's old one went: %+v, %v", img, err)
	}
}
