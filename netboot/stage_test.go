package netboot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStageIPXEFollowsSymlinks(t *testing.T) {
	src, outside, dst := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "ipxe")
	os.WriteFile(filepath.Join(outside, "ipxe.efi"), []byte("efi"), 0o644)
	os.Symlink(filepath.Join(outside, "ipxe.efi"), filepath.Join(src, "ipxe.efi")) // like Debian's
	os.WriteFile(filepath.Join(src, "undionly.kpxe"), []byte("bios"), 0o644)
	if err := StageIPXE(dst, src, "ipxe.efi", "undionly.kpxe"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ipxe.efi": "efi", "undionly.kpxe": "bios"} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: %v %v", name, fi, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, name)); string(b) != want {
			t.Errorf("%s = %q", name, b)
		}
	}
	if err := StageIPXE(dst, src, "snponly.efi"); err == nil {
		t.Error("missing file staged")
	}
	if err := StageIPXE(dst, src, "../x"); err == nil {
		t.Error("path accepted")
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"off": ModeOff, "reservation": ModeReservation, "proxy": ModeProxy} {
		if m, err := ParseMode(s); err != nil || m != want || m.String() != s {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	if _, err := ParseMode("dynamic"); err == nil {
		t.Error("bad mode accepted")
	}
}
