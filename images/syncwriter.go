package images

import "os"

// writebackEvery is how much an import writes before it asks the kernel to
// start writing it back. Without that the kernel would keep up to
// dirty_ratio of RAM (gigabytes) dirty and the final fsync would write it
// all at once, after the hashing is done; with it, disk writes overlap the
// hashing and the fsync finds little left to do.
const writebackEvery = 16 << 20

// syncWriter writes a temp file, starting writeback as it goes.
type syncWriter struct {
	f       *os.File
	noSync  bool
	off     int64 // bytes written
	flushed int64 // bytes handed to writeback
	err     error
}

func newSyncWriter(f *os.File, noSync bool) *syncWriter { return &syncWriter{f: f, noSync: noSync} }

func (w *syncWriter) Write(p []byte) error {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if err != nil {
		w.err = err
		return err
	}
	if !w.noSync && w.off-w.flushed >= writebackEvery {
		startWriteback(w.f, w.flushed, w.off-w.flushed)
		w.flushed = w.off
	}
	return nil
}
