package qemu

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// File is one entry of an initramfs.
type File struct {
	Path string // without leading slash, e.g. "bin/busybox"
	Mode uint32 // permission bits
	Data []byte // regular file contents
	Dir  bool
	// Dev, when set, makes a character device (major, minor), e.g. the
	// console (5, 1), so PID 1 has a stdout before /dev is mounted.
	Dev *[2]uint32
}

// WriteInitramfs writes files as a gzip-compressed newc cpio archive,
// the format the kernel unpacks as its initramfs. Parent directories
// must be listed; entries are written sorted by path.
func WriteInitramfs(w io.Writer, files []File) error {
	zw := gzip.NewWriter(w)
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for i, f := range sorted {
		mode := f.Mode & 0o7777
		var data []byte
		var rmaj, rmin uint32
		switch {
		case f.Dir:
			mode |= 0o040000
		case f.Dev != nil:
			mode |= 0o020000
			rmaj, rmin = f.Dev[0], f.Dev[1]
		default:
			mode |= 0o100000
			data = f.Data
		}
		if err := cpioEntry(zw, uint32(i+1), strings.TrimPrefix(f.Path, "/"), mode, data, rmaj, rmin); err != nil {
			return err
		}
	}
	if err := cpioEntry(zw, 0, "TRAILER!!!", 0, nil, 0, 0); err != nil {
		return err
	}
	return zw.Close()
}

func cpioEntry(w io.Writer, ino uint32, name string, mode uint32, data []byte, rmaj, rmin uint32) error {
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	buf := []byte(hdr + name + "\x00")
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	_, err := w.Write(make([]byte, pad4(len(data))))
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }

// BusyboxInitramfs returns the files of an initramfs whose /init is a
// busybox sh script (script is its body, after the #! line). busybox is
// the static binary of Debian's busybox-static (/bin/busybox).
func BusyboxInitramfs(busybox, script string) ([]File, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w (Debian package busybox-static)", err)
	}
	return []File{
		{Path: "bin", Dir: true, Mode: 0o755},
		{Path: "bin/busybox", Mode: 0o755, Data: bb},
		{Path: "dev", Dir: true, Mode: 0o755},
		{Path: "dev/console", Mode: 0o600, Dev: &[2]uint32{5, 1}},
		{Path: "proc", Dir: true, Mode: 0o755},
		{Path: "sys", Dir: true, Mode: 0o755},
		{Path: "init", Mode: 0o755, Data: []byte("#!/bin/busybox sh\n" + script)},
	}, nil
}
