package bootenv

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cavaliergopher/cpio"
)

// overlayFixture is a kernel modules dir with one module and a stand-in
// static agent: enough for Build, without a kernel.
func overlayFixture(t *testing.T) (modDir, agent string) {
	t.Helper()
	dir := t.TempDir()
	modDir = filepath.Join(dir, "lib/modules/6.1.0-test")
	os.MkdirAll(filepath.Join(modDir, "kernel/drivers/net"), 0o755)
	os.WriteFile(filepath.Join(modDir, "kernel/drivers/net/virtio_net.ko"), []byte("base module"), 0o644)
	os.WriteFile(filepath.Join(modDir, "modules.dep"), []byte("kernel/drivers/net/virtio_net.ko:\n"), 0o644)
	agent = filepath.Join(dir, "agent")
	os.WriteFile(agent, []byte("\x7fELF static stand-in"), 0o755)
	return modDir, agent
}

// dcgmOverlay is what an operator adds for GPU diagnostics: dcgmi, a
// library and its soname link, and the driver's modules with kbuild's
// modules.order (nvidia before nvidia-uvm, which path order would not give).
func dcgmOverlay(t *testing.T) string {
	t.Helper()
	o := t.TempDir()
	write := func(p, body string, mode os.FileMode) {
		os.MkdirAll(filepath.Dir(filepath.Join(o, p)), 0o755)
		if err := os.WriteFile(filepath.Join(o, p), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/bin/dcgmi", "#!/bin/sh\necho dcgmi\n", 0o755)
	write("usr/lib/x86_64-linux-gnu/libdcgm.so.4.2.3", "library", 0o644)
	if err := os.Symlink("libdcgm.so.4.2.3", filepath.Join(o, "usr/lib/x86_64-linux-gnu/libdcgm.so.4")); err != nil {
		t.Fatal(err)
	}
	write("lib/modules/6.1.0-test/updates/dkms/nvidia.ko.xz", "nvidia", 0o644)
	write("lib/modules/6.1.0-test/updates/dkms/nvidia-uvm.ko.xz", "nvidia-uvm", 0o644)
	write("lib/modules/6.1.0-test/modules.order", "updates/dkms/nvidia.ko.xz\nupdates/dkms/nvidia-uvm.ko.xz\n", 0o644)
	return o
}

func TestOverlaysGoInAsTheyAreAndTheirModulesLoadInTheirOrder(t *testing.T) {
	modDir, agent := overlayFixture(t)
	var buf bytes.Buffer
	m, err := Build(context.Background(), Options{KernelRelease: "6.1.0-test", ModulesDir: modDir, AgentBinary: agent,
		Modules: []string{"virtio_net"}, Compression: Gzip, Out: &buf, Overlays: []string{dcgmOverlay(t)}})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]entry{}
	for _, e := range readArchive(t, buf.Bytes(), Gzip) {
		files[e.hdr.Name] = e
	}
	if e := files["usr/bin/dcgmi"]; !e.hdr.Mode.IsRegular() || e.hdr.Mode.Perm() != 0o755 || !strings.Contains(string(e.body), "echo dcgmi") {
		t.Errorf("dcgmi: %+v %q", e.hdr, e.body)
	}
	if e := files["usr/lib/x86_64-linux-gnu/libdcgm.so.4"]; e.hdr.Mode&^cpio.ModePerm != cpio.TypeSymlink || e.hdr.Linkname != "libdcgm.so.4.2.3" {
		t.Errorf("the soname link: mode %v link %q", e.hdr.Mode, e.hdr.Linkname)
	}
	order := strings.Fields(string(files["etc/metalhall/modules.order"].body))
	want := []string{"/lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko",
		"/lib/modules/6.1.0-test/updates/dkms/nvidia.ko.xz", "/lib/modules/6.1.0-test/updates/dkms/nvidia-uvm.ko.xz"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("modules.order = %v, want %v", order, want)
	}
	if len(m.Overlay) != 6 || len(m.Modules) != 3 {
		t.Errorf("manifest: %d overlay files, %d modules: %+v", len(m.Overlay), len(m.Modules), m.Overlay)
	}
}

func TestOverlaysThatCannotGoInAreRefused(t *testing.T) {
	modDir, agent := overlayFixture(t)
	build := func(overlay string) error {
		_, err := Build(context.Background(), Options{KernelRelease: "6.1.0-test", ModulesDir: modDir, AgentBinary: agent,
			Modules: []string{"virtio_net"}, Compression: None, Out: io.Discard, Overlays: []string{overlay}})
		return err
	}
	mk := func(p string) string {
		o := t.TempDir()
		os.MkdirAll(filepath.Dir(filepath.Join(o, p)), 0o755)
		os.WriteFile(filepath.Join(o, p), []byte("x"), 0o644)
		return o
	}
	for _, tc := range []struct{ overlay, want string }{
		{mk("init"), "init: not allowed: it is the agent itself"},
		{mk("etc/metalhall/modules.order"), "the build writes it"},
		{mk("dev/nvidia0"), "mounted over at boot"},
		{mk("lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko"), "already in the boot environment (from the kernel's modules)"},
		{filepath.Join(t.TempDir(), "none"), "no such file or directory"},
		{agent, "is not a directory"},
	} {
		if err := build(tc.overlay); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("overlay %s: err = %v, want %q", tc.overlay, err, tc.want)
		}
	}
	fifo := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(fifo, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := build(fifo); err == nil || !strings.Contains(err.Error(), "only directories, regular files and symbolic links") {
		t.Errorf("a named pipe: err = %v", err)
	}
	order := t.TempDir()
	os.MkdirAll(filepath.Join(order, "lib/modules/6.1.0-test"), 0o755)
	os.WriteFile(filepath.Join(order, "lib/modules/6.1.0-test/modules.order"), []byte("extra/gone.ko\n"), 0o644)
	if err := build(order); err == nil || !strings.Contains(err.Error(), "modules.order line 1 names extra/gone.ko") {
		t.Errorf("modules.order naming a missing module: err = %v", err)
	}
}
