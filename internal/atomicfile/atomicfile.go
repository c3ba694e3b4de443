// Package atomicfile writes files so that a reader — or the next start
// after a crash — sees either the old content or the whole new one, never
// a part: the bytes go to a temp file in the same directory, which is
// fsynced, renamed over the target, and then the directory is fsynced so
// the rename itself survives a power cut. It imports nothing of the
// project.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Options tune a write.
type Options struct {
	Perm fs.FileMode // mode of the new file; 0 means 0o600
	// Exclusive refuses to replace an existing file (fs.ErrExist): for
	// files created once, such as a key or a bootstrap token.
	Exclusive bool
	// NoSync skips both fsyncs. Only for tests and benchmarks.
	NoSync bool
}

// Write makes path hold what fill writes. On any error the target is
// untouched and the temp file is gone.
func Write(path string, o Options, fill func(w io.Writer) error) (err error) {
	if o.Perm == 0 {
		o.Perm = 0o600
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err = tmp.Chmod(o.Perm); err != nil {
		return err
	}
	if err = fill(tmp); err != nil {
		return err
	}
	if !o.NoSync {
		if err = tmp.Sync(); err != nil {
			return err
		}
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if o.Exclusive {
		// A hard link fails if path exists, where a rename would replace
		// it: the exclusive create, atomic.
		if err = os.Link(tmp.Name(), path); err != nil {
			return err
		}
		os.Remove(tmp.Name())
	} else if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if o.NoSync {
		return nil
	}
	return SyncDir(dir)
}

// WriteFile makes path hold data.
func WriteFile(path string, data []byte, o Options) error {
	return Write(path, o, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Copy makes path hold everything r gives, and returns how many bytes.
func Copy(path string, r io.Reader, o Options) (int64, error) {
	var n int64
	err := Write(path, o, func(w io.Writer) error {
		var err error
		n, err = io.Copy(w, r)
		return err
	})
	return n, err
}

// SyncDir fsyncs a directory, so that the names created, renamed or
// removed in it are on disk.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// IsExist reports whether err is an exclusive write refused because the
// file was there already.
func IsExist(err error) bool { return errors.Is(err, fs.ErrExist) }
