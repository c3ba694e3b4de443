package netboot

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/metalhall/metalhall/internal/atomicfile"
)

// DebianIPXEDir is where Debian's ipxe package puts the iPXE binaries.
const DebianIPXEDir = "/usr/lib/ipxe"

// DefaultIPXEFiles are the binaries the boot-file table hands out on x86.
var DefaultIPXEFiles = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// StageIPXE copies the named binaries (DefaultIPXEFiles if none) from
// src into dst, creating dst, so dst can serve as TFTPRoot and IPXERoot.
//
// Why a copy: the roots are opened with os.Root, which refuses symlinks
// that leave the root, and Debian's /usr/lib/ipxe/ipxe.efi is a symlink
// to /boot/ipxe.efi. Copying (following links) keeps the confinement
// strict and the served set explicit.
func StageIPXE(dst, src string, names ...string) error {
	if len(names) == 0 {
		names = DefaultIPXEFiles
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("staging iPXE binaries: %w", err)
	}
	for _, name := range names {
		if _, ok := CleanTFTPName(name); !ok {
			return fmt.Errorf("staging iPXE binaries: %q is not a plain file name", name)
		}
		if err := copyFile(filepath.Join(dst, name), filepath.Join(src, name)); err != nil {
			return fmt.Errorf("staging iPXE binary %s from %s: %w (Debian package ipxe)", name, src, err)
		}
	}
	return nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src) // follows symlinks, on purpose
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = atomicfile.Copy(dst, in, atomicfile.Options{Perm: 0o644})
	return err
}
