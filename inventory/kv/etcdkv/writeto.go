package etcdkv

import (
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// WriteTo writes the transaction's view of the store to w as a bbolt
// database file with the same buckets, keys and sequences as boltkv
// keeps: backups have one format whatever the engine. The file is built
// in a temporary file first (bbolt writes pages, not a stream).
func (t *tx) WriteTo(w io.Writer) (int64, error) {
	f, err := os.CreateTemp("", "metalhall-backup-*.db")
	if err != nil {
		return 0, fmt.Errorf("backup: temporary file: %w", err)
	}
	path := f.Name()
	f.Close()
	defer os.Remove(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	err = db.Update(func(btx *bolt.Tx) error {
		for m, ok := t.after(markerPrefix, markerEnd, true); ok; m, ok = t.after(m.key, markerEnd, false) {
			name := m.key[len(markerPrefix):]
			b, err := btx.CreateBucket([]byte(name))
			if err != nil {
				return fmt.Errorf("bucket %q: %w", name, err)
			}
			b.FillPercent = 1 // keys arrive in order
			if err := b.SetSequence((&bucket{t: t, name: name}).Sequence()); err != nil {
				return err
			}
			lo, hi := bucketLo(name), bucketHi(name)
			for r, ok := t.after(lo, hi, true); ok; r, ok = t.after(r.key, hi, false) {
				if err := b.Put([]byte(r.key[len(lo):]), r.val); err != nil {
					return fmt.Errorf("bucket %q key %q: %w", name, r.key[len(lo):], err)
				}
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	f, err = os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	return io.Copy(w, f)
}
