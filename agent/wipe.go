package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/metalhall/metalhall/agent/wire"
)

// wipeEdge is how much is zeroed at each end of a disk in fast mode: it
// covers MBR/GPT (primary at the start, backup at the end), MD RAID and
// LVM labels, and filesystem superblocks at the start.
const wipeEdge = 1 << 20

// WipeResult says what Wipe did to one disk.
type WipeResult struct {
	Target    string
	Mode      wire.WipeMode
	Size      int64
	Discarded bool  // the whole device was discarded (TRIM/deallocate)
	Zeroed    int64 // bytes explicitly zeroed
}

// Wipe erases the disk (or file) at path. Fast: discard the whole device
// where supported, then zero the first and last MiB and check they read
// back as zeros. Full: write zeros over everything and read it all back.
func Wipe(ctx context.Context, path string, mode wire.WipeMode, prog ProgressFunc) (WipeResult, error) {
	res := WipeResult{Target: path, Mode: mode}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return res, fmt.Errorf("wipe: %w", err)
	}
	defer f.Close()
	if res.Size, err = targetSize(f); err != nil {
		return res, fmt.Errorf("wipe %s: %w", path, err)
	}
	size := res.Size
	switch mode {
	case wire.WipeFast, "":
		res.Mode = wire.WipeFast
		switch err := discardRange(f, 0, size); {
		case err == nil:
			res.Discarded = true
		case errors.Is(err, errNotSupported):
			// Old disks and some RAID controllers cannot discard; the
			// zeroed edges still make the disk look blank to installers.
		default:
			return res, fmt.Errorf("wipe %s: discard: %w", path, err)
		}
		head := min(wipeEdge, size)
		if err := writeZeros(f, 0, head); err != nil {
			return res, fmt.Errorf("wipe %s: %w", path, err)
		}
		tail := min(wipeEdge, size-head)
		if err := writeZeros(f, size-tail, tail); err != nil {
			return res, fmt.Errorf("wipe %s: %w", path, err)
		}
		res.Zeroed = head + tail
		if err := f.Sync(); err != nil {
			return res, fmt.Errorf("wipe %s: fsync: %w", path, err)
		}
		dropCache(f)
		if err := checkZero(ctx, f, 0, head, nil); err != nil {
			return res, fmt.Errorf("wipe %s: verify: %w", path, err)
		}
		if err := checkZero(ctx, f, size-tail, tail, nil); err != nil {
			return res, fmt.Errorf("wipe %s: verify: %w", path, err)
		}
	case wire.WipeFull:
		p := newProgressTicker(prog, wire.StepWipe, size, 5e9)
		buf := make([]byte, chunkSize)
		for off := int64(0); off < size; {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			n := min(int64(len(buf)), size-off)
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return res, fmt.Errorf("wipe %s: write at %d: %w", path, off, err)
			}
			off += n
			res.Zeroed = off
			p.update(off)
		}
		p.finish(size)
		if err := f.Sync(); err != nil {
			return res, fmt.Errorf("wipe %s: fsync: %w", path, err)
		}
		dropCache(f)
		vp := newProgressTicker(prog, wire.StepVerify, size, 5e9)
		if err := checkZero(ctx, f, 0, size, vp); err != nil {
			return res, fmt.Errorf("wipe %s: verify: %w", path, err)
		}
		vp.finish(size)
	default:
		return res, fmt.Errorf("wipe %s: unknown mode %q (want fast or full)", path, mode)
	}
	rereadPartitions(f)
	return res, nil
}

// checkZero reads [off, off+n) and fails at the first non-zero byte.
func checkZero(ctx context.Context, f *os.File, off, n int64, prog *progressTicker) error {
	buf := make([]byte, min(n, chunkSize))
	start := off
	for end := off + n; off < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		for i, b := range buf[:m] {
			if b != 0 {
				return fmt.Errorf("byte %d is %#x, not zero", off+int64(i), b)
			}
		}
		off += int64(m)
		if prog != nil {
			prog.update(off - start)
		}
		if err != nil && !(err == io.EOF && off == end) {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	return nil
}
