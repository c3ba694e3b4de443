package images

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

func TestDeleteSharedBlob(t *testing.T) {
	fx := newFixture(t, Options{})
	a, err := fx.s.Import(ctx, strings.NewReader("same bytes"), ImportOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fx.s.Import(ctx, strings.NewReader("same bytes"), ImportOptions{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	fx.wantFiles(t, a.SHA256)
	if err := fx.s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	fx.wantFiles(t, a.SHA256) // b still uses it
	if err := fx.s.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	fx.wantFiles(t)
	fx.wantNoImages(t)
	if err := fx.s.Delete(ctx, "b"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("deleting a deleted image: %v", err)
	}
}

func TestGC(t *testing.T) {
	fx := newFixture(t, Options{})
	keep, err := fx.s.Import(ctx, strings.NewReader("kept"), ImportOptions{Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	// What a crash can leave: a blob and map whose catalogue entry was
	// never written, a map alone, a temp file.
	orphan := sum([]byte("orphan"))
	p, _ := fx.s.BlobPath(orphan)
	os.MkdirAll(filepath.Dir(p), 0o750)
	os.WriteFile(p, []byte("orphan"), 0o640)
	os.WriteFile(blockMapPath(p), []byte("{}"), 0o640)
	lone, _ := fx.s.BlobPath(sum([]byte("lone map")))
	os.MkdirAll(filepath.Dir(lone), 0o750)
	os.WriteFile(blockMapPath(lone), []byte("{}"), 0o640)
	os.WriteFile(filepath.Join(fx.dir, "blobs", "tmp", "import-0123.part"), []byte("half"), 0o640)

	rep, err := fx.s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Blobs) != 1 || rep.Blobs[0] != orphan || rep.TempFiles != 1 || rep.Bytes != int64(len("orphan")+2+2+4) {
		t.Fatalf("gc report = %+v", rep)
	}
	fx.wantFiles(t, keep.SHA256)
	if rep, err := fx.s.GC(ctx); err != nil || len(rep.Blobs) != 0 || rep.Bytes != 0 {
		t.Fatalf("second gc: %+v %v", rep, err)
	}
}

func TestDeleteRefusedWhileUsed(t *testing.T) {
	fx := newFixture(t, Options{})
	img, err := fx.s.Import(ctx, strings.NewReader("os"), ImportOptions{Name: "ubuntu"})
	if err != nil {
		t.Fatal(err)
	}
	enrollUser(t, fx.inv, "gpu-01", "ubuntu")
	err = fx.s.Delete(ctx, "ubuntu")
	if !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "gpu-01") {
		t.Fatalf("delete of a used image: %v, want a conflict naming the machine", err)
	}
	fx.wantFiles(t, img.SHA256)
	if _, err := fx.inv.Image(ctx, "ubuntu"); err != nil {
		t.Fatal(err)
	}
}

// enrollUser puts a machine, deployed with image, into a minimal hall.
func enrollUser(t *testing.T, inv *inventory.Store, name, image string) {
	t.Helper()
	steps := []error{
		second(inv.CreateSite(ctx, inventory.Site{Name: "s1"})),
		second(inv.CreateHall(ctx, inventory.Hall{Name: "h1", Site: "s1"})),
		second(inv.CreatePhase(ctx, inventory.Phase{Hall: "h1", Number: 1, BudgetW: 1_000_000})),
		second(inv.SetPhaseState(ctx, "h1", 1, inventory.PhaseCommissioning)),
		second(inv.CreateRack(ctx, inventory.Rack{Name: "r1", Hall: "h1", Phase: 1, Units: 48, BudgetW: 44_000})),
		second(inv.EnrollMachine(ctx, inventory.Enrollment{Machine: inventory.Machine{Name: name, Rack: "r1", Unit: 1, Height: 1,
			MACs: []string{"52:54:00:00:00:01"}, BMC: inventory.BMC{Address: "10.1.0.1", Protocol: inventory.ProtocolIPMI, Username: "admin"}, PowerW: 1000},
			SealedPassword: []byte("sealed")})),
		second(inv.UpdateMachine(ctx, name, func(m *inventory.Machine) error { m.Image = image; return nil })),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("fixture step %d: %v", i, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }
