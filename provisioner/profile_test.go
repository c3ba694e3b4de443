package provisioner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAGPUProfileWithoutAnOSDiskIsRefusedWithItsLine(t *testing.T) {
	_, err := ParseProfile("hgx-h100", []byte("gpu_model: H100\n\ngpu_count: 8\nmin_disks: 10\n"))
	var pe *ProfileError
	if !errors.As(err, &pe) || pe.Line != 3 || !strings.Contains(err.Error(), "os_disk is not set") || !strings.Contains(err.Error(), "data NVMe") {
		t.Fatalf("GPU profile without os_disk: %v", err)
	}
	if _, err := ParseProfile("hgx-h100", []byte("gpu_model: H100\ngpu_count: 8\nos_disk: nvme0n1\n")); err != nil {
		t.Fatalf("with os_disk: %v", err)
	}
	if _, err := ParseProfile("lab-vm", []byte("min_disks: 1\n")); err != nil {
		t.Fatalf("a profile without GPUs needs no os_disk: %v", err)
	}
	_, err = ParseProfile("typo", []byte("min_disks: 1\ngpu_cuont: 8\n"))
	if !errors.As(err, &pe) || pe.Line != 2 || !strings.Contains(err.Error(), "gpu_cuont") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := ParseProfile("../etc", []byte("")); !errors.As(err, &pe) {
		t.Fatalf("a path as a name: %v", err)
	}
}

func TestProfileDirPutsListsAndRemovesNothingOnBadInput(t *testing.T) {
	ctx := context.Background()
	d := ProfileDir(filepath.Join(t.TempDir(), "profiles")) // not made yet
	if ps, err := d.Profiles(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("a directory not made yet: %v %v", ps, err)
	}
	if _, err := d.PutProfile(ctx, "hgx", []byte("gpu_count: 8\n")); err == nil {
		t.Fatal("a bad profile was written")
	}
	if _, err := os.Stat(string(d)); err == nil {
		t.Fatal("a refused profile made the directory")
	}
	if _, err := d.PutProfile(ctx, "hgx", []byte("gpu_count: 8\nos_disk: nvme0n1\n")); err != nil {
		t.Fatal(err)
	}
	// A file dropped in by hand, broken: listed with its error.
	os.WriteFile(filepath.Join(string(d), "old.yaml"), []byte("gpu_count: 4\n"), 0o644)
	ps, err := d.Profiles(ctx)
	if err != nil || len(ps) != 2 || ps[0].Name != "hgx" || ps[0].Err != nil || ps[1].Name != "old" || ps[1].Err == nil {
		t.Fatalf("profiles: %+v %v", ps, err)
	}
	if _, err := d.PutProfile(ctx, "hgx", []byte("gpu_count: 8\n")); err == nil {
		t.Fatal("a bad replacement was written")
	}
	if p, err := d.Profile(ctx, "hgx"); err != nil || p.OSDisk != "nvme0n1" {
		t.Fatalf("after a refused replacement: %+v %v", p, err)
	}
	if err := d.RemoveProfile(ctx, "hgx"); err != nil {
		t.Fatal(err)
	}
	var nf *ProfileNotFoundError
	if _, err := d.Profile(ctx, "hgx"); !errors.As(err, &nf) {
		t.Fatalf("after remove: %v", err)
	}
}
