package agent

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestModuleImage(t *testing.T) {
	dir := t.TempDir()
	elf := append([]byte("\x7fELF"), bytes.Repeat([]byte("module body "), 1000)...)
	plain := filepath.Join(dir, "a.ko")
	os.WriteFile(plain, elf, 0o644)
	if _, ok, err := moduleImage(plain); ok || err != nil {
		t.Errorf("plain .ko: ok=%v err=%v, want finit_module from the file", ok, err)
	}
	for ext, tool := range map[string][]string{".xz": {"xz", "-kf", "--check=crc32"}, ".zst": {"zstd", "-qkf"}, ".gz": {"gzip", "-kf"}} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			t.Logf("%s not installed; skipping %s", tool[0], ext)
			continue
		}
		// The kernel's own build compresses modules with these tools and
		// options (xz --check=crc32), so use them rather than Go encoders.
		if out, err := exec.Command(tool[0], append(tool[1:], plain)...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", tool[0], err, out)
		}
		img, ok, err := moduleImage(plain + ext)
		if err != nil || !ok || !bytes.Equal(img, elf) {
			t.Errorf("%s: ok=%v err=%v, %d bytes", ext, ok, err, len(img))
		}
	}
	if _, _, err := moduleImage(filepath.Join(dir, "a.ko.bz2")); err == nil {
		t.Error("no error for an unknown compression")
	}
}

func TestReadModulesOrder(t *testing.T) {
	got, err := ReadModulesOrder(strings.NewReader("# load order\n/lib/modules/r/kernel/a.ko\n\n  /lib/modules/r/kernel/b.ko.xz \n"))
	if err != nil || !slices.Equal(got, []string{"/lib/modules/r/kernel/a.ko", "/lib/modules/r/kernel/b.ko.xz"}) {
		t.Errorf("%q %v", got, err)
	}
}

func TestConsoleHandler(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(NewConsoleHandler(&b, slog.LevelInfo)).With("job", "j 1")
	log.Info("starting (pid 1)")
	log.Debug("hidden")
	log.Error("failed", "err", "no route", "n", 3)
	want := "metalhall-agent: starting (pid 1) job=\"j 1\"\nmetalhall-agent: ERROR: failed job=\"j 1\" err=\"no route\" n=3\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
