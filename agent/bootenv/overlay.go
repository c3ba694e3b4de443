package bootenv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cavaliergopher/cpio"

	"github.com/metalhall/metalhall/agent/wire"
)

// An overlay is a directory tree the operator adds to the boot
// environment as it is: the NVIDIA driver and DCGM from the operator's own
// package mirror, so the acceptance suite can run `dcgmi diag` (a sovereign
// site builds its boot environment from what it vetted, never from a
// vendor's download). Files keep their permission bits; symbolic links are
// kept as links. Kernel modules under lib/modules/<release>/ are loaded
// after the base set, in the order of the overlay's own modules.order (the
// file kbuild writes beside them), else in path order.

// MaxOverlayBytes bounds what overlays add: the initramfs lives in RAM
// beside the agent and the image it streams.
const MaxOverlayBytes = 2 << 30

// OverlayFile is one file an overlay put in the archive.
type OverlayFile struct {
	Path   string `json:"path"` // in the archive
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"` // regular files
	Link   string `json:"link,omitempty"`   // symbolic links: the target
}

// reservedOverlay says why an overlay may not write p (a path inside the
// archive, no leading slash), or "".
func reservedOverlay(p string) string {
	switch {
	case p == "init":
		return "it is the agent itself"
	case p == strings.TrimPrefix(ManifestPath, "/") || p == strings.TrimPrefix(wire.ModulesOrderPath, "/"):
		return "the build writes it"
	}
	for _, mnt := range []string{"dev", "proc", "sys", "run", "tmp"} {
		if p == mnt || strings.HasPrefix(p, mnt+"/") {
			return "/" + mnt + " is mounted over at boot: whatever is put there is hidden"
		}
	}
	return ""
}

// addOverlays writes each overlay into a, refusing what it cannot carry
// faithfully. taken are the archive's paths so far; it returns the files
// added and the kernel modules among them, in load order.
func addOverlays(a *archive, dirs []string, release string, taken map[string]string) (files []OverlayFile, modules []Module, err error) {
	var total int64
	for _, dir := range dirs {
		st, err := os.Stat(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("bootenv: overlay: %w", err)
		}
		if !st.IsDir() {
			return nil, nil, fmt.Errorf("bootenv: overlay %s is not a directory: give the root of a tree to add (e.g. usr/bin/dcgmi inside it)", dir)
		}
		var mods []string
		modSize := map[string]int64{}
		err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil || rel == "." {
				return err
			}
			ap := filepath.ToSlash(rel)
			if why := reservedOverlay(ap); why != "" {
				return fmt.Errorf("overlay %s: %s: not allowed: %s", dir, ap, why)
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				a.dir(ap)
				return a.err
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				if other, ok := taken[ap]; ok {
					return fmt.Errorf("overlay %s: %s is already in the boot environment (from %s)", dir, ap, other)
				}
				taken[ap] = dir
				a.symlink(ap, target)
				files = append(files, OverlayFile{Path: "/" + ap, Size: int64(len(target)), Link: target})
				return a.err
			case info.Mode().IsRegular():
			default:
				return fmt.Errorf("overlay %s: %s is a %s: only directories, regular files and symbolic links go in a boot environment", dir, ap, info.Mode().Type())
			}
			if other, ok := taken[ap]; ok {
				return fmt.Errorf("overlay %s: %s is already in the boot environment (from %s)", dir, ap, other)
			}
			if total += info.Size(); total > MaxOverlayBytes {
				return fmt.Errorf("overlay %s: the overlays add more than %d MiB: the boot environment lives in the machine's RAM", dir, MaxOverlayBytes>>20)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			taken[ap] = dir
			a.file(ap, cpio.FileMode(info.Mode().Perm()), b)
			sum := sha256.Sum256(b)
			files = append(files, OverlayFile{Path: "/" + ap, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
			if isModuleFile(ap, release) {
				mods = append(mods, ap)
				modSize[ap] = int64(len(b))
			}
			return a.err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("bootenv: %w", err)
		}
		ordered, err := overlayModuleOrder(dir, release, mods)
		if err != nil {
			return nil, nil, err
		}
		for _, ap := range ordered {
			modules = append(modules, Module{Name: ModuleName(ap), Path: "/" + ap, Size: modSize[ap], Requested: true})
		}
	}
	return files, modules, nil
}

func isModuleFile(ap, release string) bool {
	if !strings.HasPrefix(ap, path.Join("lib/modules", release)+"/") {
		return false
	}
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(ap, ext) {
			return true
		}
	}
	return false
}

// overlayModuleOrder puts an overlay's modules in the order of its
// lib/modules/<release>/modules.order (paths relative to that directory,
// as kbuild writes them; a listed module that is not there is an error),
// then any others in path order.
func overlayModuleOrder(dir, release string, mods []string) ([]string, error) {
	slices.Sort(mods)
	base := path.Join("lib/modules", release)
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(base), "modules.order"))
	if os.IsNotExist(err) {
		return mods, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bootenv: overlay %s: %w", dir, err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		rel := strings.TrimSpace(sc.Text())
		if rel == "" {
			continue
		}
		ap := path.Join(base, rel)
		i := slices.Index(mods, ap)
		if i < 0 {
			return nil, fmt.Errorf("bootenv: overlay %s: %s/modules.order line %d names %s, which the overlay does not have", dir, base, line, rel)
		}
		out = append(out, ap)
		mods = slices.Delete(mods, i, i+1)
	}
	return append(out, mods...), nil
}

func (a *archive) symlink(p, target string) {
	a.dir(path.Dir(p))
	if a.err != nil {
		return
	}
	if a.err = a.w.WriteHeader(&cpio.Header{Name: p, Mode: cpio.TypeSymlink | 0o777, Linkname: target, Size: int64(len(target))}); a.err != nil {
		return
	}
	_, a.err = a.w.Write([]byte(target))
}
