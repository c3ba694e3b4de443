// Package bootenv builds the agent's boot environment: a newc initramfs
// with the static metalhall-agent as /init and the kernel modules needed
// to reach the network and the disks of GPU servers (and of QEMU), in the
// order they must be loaded.
package bootenv

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/metalhall/metalhall/agent/wire"
)

// Compression of the initramfs. The kernel must have the matching
// CONFIG_RD_* (Debian has gzip, xz, zstd, ...).
type Compression string

const (
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
	None Compression = "none"
)

// ManifestPath is where the archive keeps its own manifest as JSON.
const ManifestPath = "/etc/metalhall/bootenv.json"

// ServerModules are the drivers for networking and storage on GPU
// servers and on QEMU. Dependencies come from modules.dep; the CRC
// providers come first because the NVMe/SCSI integrity code asks the
// crypto API for them, which would otherwise try to run modprobe.
var ServerModules = []string{
	// crypto providers needed by t10-pi (nvme, sd_mod)
	"crct10dif_generic", "crct10dif_pclmul", "crc64_rocksoft_generic", "crc32c_generic", "crc32c_intel",
	// QEMU / KVM. virtio_rng matters: without RDRAND (TCG) or a hardware
	// RNG the kernel may take minutes to seed, and DHCP needs random xids.
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_rng", "e1000", "e1000e",
	// Ethernet on servers
	"igb", "ixgbe", "i40e", "ice", "mlx5_core", "bnxt_en", "tg3",
	// storage
	"nvme", "ahci", "sd_mod", "megaraid_sas", "mpt3sas",
}

// DefaultModules are the modules Build puts in when Options.Modules is
// nil: the server set, so a boot environment built without thinking
// boots real hardware.
var DefaultModules = ServerModules

// QEMUModules are the drivers of the lab's QEMU machines only (virtio
// network, disk and RNG, and NVMe for the erase tests). With Debian's 6.1
// kernel that is 25 modules with their dependencies instead of 51, and an
// initramfs of 3.8 MB instead of 7.6 MB (gzip), which each machine
// downloads, the kernel unpacks and the agent loads before the first byte
// of its image. Not for real servers: it has none of their NIC or RAID
// drivers.
var QEMUModules = []string{
	"crct10dif_generic", "crct10dif_pclmul", "crc64_rocksoft_generic", "crc32c_generic", "crc32c_intel",
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_rng", "nvme",
}

// ModuleSets are the named module lists ModuleSet knows.
var ModuleSets = map[string][]string{"server": ServerModules, "qemu": QEMUModules}

// ModuleSet returns the module list called name ("server" or "qemu").
func ModuleSet(name string) ([]string, error) {
	m, ok := ModuleSets[name]
	if !ok {
		return nil, fmt.Errorf("bootenv: unknown module set %q (want server or qemu)", name)
	}
	return m, nil
}

// Options for Build.
type Options struct {
	// Kernel is the path of the kernel image (e.g. /boot/vmlinuz-6.1.0-56-amd64).
	// Its release is taken from the name after "vmlinuz-" unless
	// KernelRelease is set. The kernel itself is not put in the archive.
	Kernel        string
	KernelRelease string
	// ModulesDir is /lib/modules/<release> (the default).
	ModulesDir string
	// Modules replaces DefaultModules when not nil.
	Modules []string
	// ExtraModules are added after the default (or given) list.
	ExtraModules []string
	// AgentBinary is the path of the static metalhall-agent.
	AgentBinary string
	// Overlays are directory trees added to the archive as they are
	// (overlay.go): the NVIDIA driver and DCGM, from the operator's mirror.
	Overlays    []string
	Compression Compression // default gzip
	Out         io.Writer
}

// Module is one module in the archive, in load order.
type Module struct {
	Name      string `json:"name"`
	Path      string `json:"path"` // in the archive
	Size      int64  `json:"size"`
	Requested bool   `json:"requested"` // false: pulled in as a dependency
}

// Manifest describes a built boot environment.
type Manifest struct {
	KernelRelease string      `json:"kernel_release"`
	Kernel        string      `json:"kernel,omitempty"`
	Compression   Compression `json:"compression"`
	AgentSHA256   string      `json:"agent_sha256"`
	Modules       []Module    `json:"modules"`
	// Builtin are requested modules compiled into the kernel.
	Builtin []string `json:"builtin,omitempty"`
	// Missing are requested modules this kernel does not have.
	Missing []string `json:"missing,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Overlay is every file the overlays added.
	Overlay []OverlayFile `json:"overlay,omitempty"`
	// Size and SHA256 of the (compressed) archive written to Out; not
	// part of the copy inside the archive.
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// ModuleName normalises a module file or name: "kernel/x/virtio-net.ko.xz" -> "virtio_net".
func ModuleName(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// Deps is a parsed modules.dep: module name -> file (relative to the
// modules dir) and the names it depends on.
type Deps struct {
	File map[string]string
	Deps map[string][]string
}

// ParseModulesDep reads modules.dep ("kernel/a.ko: kernel/b.ko kernel/c.ko").
func ParseModulesDep(r io.Reader) (Deps, error) {
	d := Deps{File: map[string]string{}, Deps: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, deps, ok := strings.Cut(line, ":")
		if !ok {
			return d, fmt.Errorf("modules.dep line %d: no colon: %q", n, line)
		}
		name := ModuleName(file)
		d.File[name] = file
		for _, dep := range strings.Fields(deps) {
			d.Deps[name] = append(d.Deps[name], ModuleName(dep))
		}
	}
	return d, sc.Err()
}

// Order returns the modules to load for names, dependencies first, each
// once; missing lists the names (requested or needed) not in d.
func (d Deps) Order(names []string) (order, missing []string) {
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string)
	visit = func(n string) {
		if state[n] != 0 { // done, or a cycle (modules.dep has none)
			return
		}
		state[n] = 1
		if _, ok := d.File[n]; !ok {
			missing = append(missing, n)
			state[n] = 2
			return
		}
		for _, dep := range d.Deps[n] {
			visit(dep)
		}
		state[n] = 2
		order = append(order, n)
	}
	for _, n := range names {
		visit(ModuleName(n))
	}
	return order, missing
}

// Build writes the initramfs to o.Out and returns its manifest.
func Build(ctx context.Context, o Options) (Manifest, error) {
	m := Manifest{Compression: o.Compression, Kernel: o.Kernel, KernelRelease: o.KernelRelease}
	if m.Compression == "" {
		m.Compression = Gzip
	}
	if o.Out == nil {
		return m, errors.New("bootenv: no output")
	}
	if m.KernelRelease == "" {
		switch {
		case strings.HasPrefix(filepath.Base(o.Kernel), "vmlinuz-"):
			m.KernelRelease = strings.TrimPrefix(filepath.Base(o.Kernel), "vmlinuz-")
		case o.ModulesDir != "":
			m.KernelRelease = filepath.Base(filepath.Clean(o.ModulesDir))
		default:
			return m, fmt.Errorf("bootenv: cannot tell the kernel release from %q: name it vmlinuz-<release> or give the release", o.Kernel)
		}
	}
	if o.Kernel != "" {
		if _, err := os.Stat(o.Kernel); err != nil {
			return m, fmt.Errorf("bootenv: kernel: %w", err)
		}
	}
	modDir := o.ModulesDir
	if modDir == "" {
		modDir = filepath.Join("/lib/modules", m.KernelRelease)
	}
	agentBin, err := os.ReadFile(o.AgentBinary)
	if err != nil {
		return m, fmt.Errorf("bootenv: agent binary: %w", err)
	}
	if err := checkStatic(agentBin); err != nil {
		return m, fmt.Errorf("bootenv: agent binary %s: %w", o.AgentBinary, err)
	}
	sum := sha256.Sum256(agentBin)
	m.AgentSHA256 = hex.EncodeToString(sum[:])

	depf, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return m, fmt.Errorf("bootenv: %w (is %s the modules of kernel %s?)", err, modDir, m.KernelRelease)
	}
	deps, err := ParseModulesDep(depf)
	depf.Close()
	if err != nil {
		return m, fmt.Errorf("bootenv: %s: %w", modDir, err)
	}
	builtin := readBuiltin(filepath.Join(modDir, "modules.builtin"))

	want := o.Modules
	if want == nil {
		want = DefaultModules
	}
	want = append(append([]string{}, want...), o.ExtraModules...)
	requested := map[string]bool{}
	var present []string
	for _, n := range want {
		n = ModuleName(n)
		if requested[n] {
			continue
		}
		requested[n] = true
		if builtin[n] {
			m.Builtin = append(m.Builtin, n)
			continue
		}
		present = append(present, n)
	}
	order, missing := deps.Order(present)
	for _, n := range missing {
		if requested[n] {
			m.Missing = append(m.Missing, n)
			m.Notes = append(m.Notes, fmt.Sprintf("module %s: not in %s/modules.dep, skipped", n, modDir))
		} else if !builtin[n] {
			m.Notes = append(m.Notes, fmt.Sprintf("module %s: needed as a dependency but missing", n))
		}
	}

	// The archive: directories first (the kernel's unpacker does not
	// create parents), then /init, the modules, and the metadata.
	cw := &countHash{w: o.Out, h: sha256.New()}
	var zw io.WriteCloser
	switch m.Compression {
	case Gzip:
		zw, _ = gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	case Zstd:
		// The kernel's zstd decompressor wants a window it can allocate
		// early in boot; 8 MiB is what the in-tree initramfs uses.
		zw, err = zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithWindowSize(8<<20))
		if err != nil {
			return m, fmt.Errorf("bootenv: zstd: %w", err)
		}
	case None:
		zw = nopCloser{cw}
	default:
		return m, fmt.Errorf("bootenv: unknown compression %q (want gzip, zstd or none)", m.Compression)
	}
	a := &archive{w: cpio.NewWriter(zw), dirs: map[string]bool{}}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc/metalhall", "root"} {
		a.dir(d)
	}
	a.file("init", 0o755, agentBin)

	var orderFile strings.Builder
	for _, n := range order {
		if err := ctx.Err(); err != nil {
			return m, err
		}
		rel := deps.File[n]
		b, err := os.ReadFile(filepath.Join(modDir, rel))
		if err != nil {
			return m, fmt.Errorf("bootenv: module %s: %w", n, err)
		}
		p := path.Join("lib/modules", m.KernelRelease, rel)
		a.file(p, 0o644, b)
		m.Modules = append(m.Modules, Module{Name: n, Path: "/" + p, Size: int64(len(b)), Requested: requested[n]})
		orderFile.WriteString("/" + p + "\n")
	}
	taken := map[string]string{"init": "the agent"}
	for _, mod := range m.Modules {
		taken[strings.TrimPrefix(mod.Path, "/")] = "the kernel's modules"
	}
	files, extra, err := addOverlays(a, o.Overlays, m.KernelRelease, taken)
	if err != nil {
		return m, err
	}
	m.Overlay = files
	for _, mod := range extra {
		m.Modules = append(m.Modules, mod)
		orderFile.WriteString(mod.Path + "\n")
	}
	a.file(strings.TrimPrefix(wire.ModulesOrderPath, "/"), 0o644, []byte(orderFile.String()))
	mj, _ := json.MarshalIndent(m, "", "  ")
	a.file(strings.TrimPrefix(ManifestPath, "/"), 0o644, append(mj, '\n'))
	if a.err == nil {
		a.err = a.w.Close()
	}
	if a.err != nil {
		return m, fmt.Errorf("bootenv: writing the archive: %w", a.err)
	}
	if err := zw.Close(); err != nil {
		return m, fmt.Errorf("bootenv: compressing the archive: %w", err)
	}
	m.Size, m.SHA256 = cw.n, hex.EncodeToString(cw.h.Sum(nil))
	return m, nil
}

func readBuiltin(p string) map[string]bool {
	out := map[string]bool{}
	b, err := os.ReadFile(p)
	if err != nil {
		return out
	}
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" {
			out[ModuleName(l)] = true
		}
	}
	return out
}

// checkStatic refuses a dynamically linked agent: there is no libc or
// loader in the initramfs, and the kernel would fail with a bare ENOENT.
func checkStatic(b []byte) error {
	if len(b) < 4 || string(b[:4]) != "\x7fELF" {
		return errors.New("not an ELF executable")
	}
	if strings.Contains(string(b[:min(len(b), 4096)]), "/lib64/ld-linux") || strings.Contains(string(b[:min(len(b), 4096)]), "/lib/ld-linux") {
		return errors.New("dynamically linked: build it with CGO_ENABLED=0")
	}
	return nil
}

type archive struct {
	w    *cpio.Writer
	dirs map[string]bool
	err  error
}

func (a *archive) dir(p string) {
	if p == "." || p == "" || a.dirs[p] || a.err != nil {
		return
	}
	a.dir(path.Dir(p))
	a.dirs[p] = true
	a.err = a.w.WriteHeader(&cpio.Header{Name: p, Mode: cpio.TypeDir | 0o755})
}

func (a *archive) file(p string, perm cpio.FileMode, b []byte) {
	a.dir(path.Dir(p))
	if a.err != nil {
		return
	}
	if a.err = a.w.WriteHeader(&cpio.Header{Name: p, Mode: cpio.TypeReg | perm, Size: int64(len(b))}); a.err != nil {
		return
	}
	_, a.err = a.w.Write(b)
}

type countHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// FindAgent returns the metalhall-agent binary to put in the archive:
// next to the running executable, else on PATH.
func FindAgent() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "metalhall-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("metalhall-agent")
	if err != nil {
		return "", errors.New("metalhall-agent not found next to this binary or on PATH: build it with 'CGO_ENABLED=0 go build ./cmd/metalhall-agent' and pass its path")
	}
	return p, nil
}
