package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/images/imagefmt"
)

// zeroBlock is the granularity of zero detection when there is no block
// map: the image contract's, so both sides skip the same holes.
const zeroBlock = imagefmt.BlockSize

// chunkSize is how much decompressed data is handled per write. Large
// enough that a NVMe queue stays busy, small enough to keep RAM low.
const chunkSize = 4 << 20

// ProgressFunc receives progress reports; it must not block for long.
type ProgressFunc func(wire.Progress)

// WriteOptions say what to write where.
type WriteOptions struct {
	Image  wire.ImageSpec // Image.URL must be absolute
	Target string         // block device or regular file
	Fetch  FetchOptions
	// ProgressEvery is the interval between progress reports (default 5 s).
	ProgressEvery time.Duration
	Progress      ProgressFunc // may be nil
	Log           *slog.Logger
}

// WriteResult says what WriteImage did.
type WriteResult struct {
	Bytes   int64  // uncompressed image size
	Written int64  // bytes actually written
	Skipped int64  // zero bytes not written (hole, discard or write-zeroes)
	Resumes int    // HTTP resumes after dropped connections
	SHA256  string // verified, hex
	Elapsed time.Duration
}

// ErrChecksum is wrapped by WriteImage when the image does not match its
// sha256, either as streamed or as read back from the target.
var ErrChecksum = errors.New("sha256 mismatch")

// ErrDiskMismatch is wrapped, beside ErrChecksum, when the image arrived
// whole and right but the disk read back differs: the verify step failed,
// not the write.
var ErrDiskMismatch = errors.New("the disk did not keep what was written")

// WriteImage streams the image from HTTP, decompresses it, writes it to
// the target skipping zero regions, fsyncs and verifies the sha256 of
// what it reads back from the target.
//
// The stream itself is not hashed: the read-back hash alone proves both
// what was downloaded and what landed, and in a TCG guest (the lab, the
// PXE bench) one sha256 pass over the image cost as much as writing it.
// A compressed stream is still checked by its decoder as it arrives.
// Only when the read-back does not match is the image fetched again and
// hashed, to tell a corrupt or wrong image (step write) from a disk that
// did not keep what was written (step verify).
func WriteImage(ctx context.Context, o WriteOptions) (WriteResult, error) {
	start := time.Now()
	var res WriteResult
	img := o.Image
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Fetch.Log == nil {
		o.Fetch.Log = o.Log
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = 5 * time.Second
	}
	want := strings.ToLower(img.SHA256)
	if len(want) != 64 {
		return res, fmt.Errorf("image %s: sha256 %q is not 64 hex digits", img.URL, img.SHA256)
	}
	if img.UncompressedSize <= 0 {
		return res, fmt.Errorf("image %s: uncompressed size is not set", img.URL)
	}
	format, err := imagefmt.Parse(string(img.Format))
	if err != nil {
		return res, fmt.Errorf("image %s: %w", img.URL, err)
	}
	if format == "" {
		format = imagefmt.Raw
	}
	blockMap := make([]imagefmt.Extent, len(img.BlockMap))
	for i, r := range img.BlockMap {
		blockMap[i] = imagefmt.Extent{Offset: r.Offset, Length: r.Length}
	}
	if _, err := imagefmt.ValidateExtents(blockMap, img.UncompressedSize); err != nil {
		return res, fmt.Errorf("image %s: %w", img.URL, err)
	}

	f, err := openTarget(o.Target, img.UncompressedSize)
	if err != nil {
		return res, err
	}
	defer f.Close()

	prog := newProgressTicker(o.Progress, wire.StepWrite, img.UncompressedSize, o.ProgressEvery)
	sw := &sparseWriter{f: f, blockMap: blockMap, prog: prog}
	resumes, err := streamImage(ctx, img, format, o.Fetch, func(dec io.Reader, stop func()) error {
		return sw.copyFrom(ctx, dec, img.UncompressedSize, stop)
	})
	res.Resumes = resumes
	if err != nil {
		return res, fmt.Errorf("image %s to %s: %w", img.URL, o.Target, err)
	}
	res.Written, res.Skipped, res.Bytes = sw.written, sw.skipped, img.UncompressedSize
	prog.finish(img.UncompressedSize)
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("%s: fsync: %w", o.Target, err)
	}
	o.Log.Info("image written, verifying", "target", o.Target, "written", res.Written, "skipped", res.Skipped)

	got, err := readBackSHA256(ctx, o.Target, f, img.UncompressedSize, newProgressTicker(o.Progress, wire.StepVerify, img.UncompressedSize, o.ProgressEvery))
	if err != nil {
		return res, fmt.Errorf("%s: verify: %w", o.Target, err)
	}
	if got != want {
		return res, mismatch(ctx, o, format, got, want)
	}
	rereadPartitions(f)
	res.SHA256 = got
	res.Elapsed = time.Since(start)
	return res, nil
}

// streamImage opens the image's HTTP stream (resumable) and its decoder
// and hands the decoder to consume, with a stop that aborts the download
// (so a failing disk ends a blocked read). It returns the HTTP resumes.
func streamImage(ctx context.Context, img wire.ImageSpec, format imagefmt.Format, fetch FetchOptions, consume func(dec io.Reader, stop func()) error) (int, error) {
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	body, err := openResumable(dctx, img.URL, fetch)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	// The decoder stops at the size the service measured at import: a
	// longer stream is not the image the task names.
	dec, err := imagefmt.NewDecoder(format, body, img.UncompressedSize)
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	err = consume(dec, stop)
	return body.resumes, err
}

// mismatch explains a read-back sha256 that is not the image's. The
// image is fetched again and hashed as it arrives (nothing is written):
// if that hash is wrong too, the image as served is corrupt or not the
// one named (the write step failed); if it is right, the disk did not
// keep what was written, or the block map hid data (the verify step
// failed). Costs a second download, only on this failure path.
func mismatch(ctx context.Context, o WriteOptions, format imagefmt.Format, got, want string) error {
	img := o.Image
	diskErr := fmt.Errorf("%s: read back sha256 %s, want %s: %w (%w)", o.Target, got, want, ErrChecksum, ErrDiskMismatch)
	o.Log.Warn("read-back sha256 mismatch; fetching the image again to tell a corrupt image from a bad disk", "target", o.Target, "got", got, "want", want)
	// Reported as verify progress: the service sees the agent at work.
	prog := newProgressTicker(o.Progress, wire.StepVerify, img.UncompressedSize, o.ProgressEvery)
	h := sha256.New()
	_, err := streamImage(ctx, img, format, o.Fetch, func(dec io.Reader, _ func()) error {
		n, err := io.Copy(io.MultiWriter(h, progressWriter{prog, new(int64)}), dec)
		if err == nil && n != img.UncompressedSize {
			err = fmt.Errorf("image ended at %d bytes, expected %d", n, img.UncompressedSize)
		}
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w; fetching the image again to tell a corrupt image from a bad disk: %w", diskErr, ctx.Err())
		}
		// The image does not decode or arrive whole this time: still a
		// mismatch, and the stream is the suspect (step write: no
		// ErrDiskMismatch).
		return fmt.Errorf("image %s: the disk's sha256 %s is not the image's %s: %w; fetched again to find out why, it failed: %w (corrupt image or network)", img.URL, got, want, ErrChecksum, err)
	}
	if streamed := hex.EncodeToString(h.Sum(nil)); streamed != want {
		return fmt.Errorf("image %s: downloaded data has sha256 %s, want %s: %w (corrupt or wrong image)", img.URL, streamed, want, ErrChecksum)
	}
	return diskErr
}

// progressWriter reports the bytes that pass through it.
type progressWriter struct {
	prog *progressTicker
	n    *int64
}

func (p progressWriter) Write(b []byte) (int, error) {
	*p.n += int64(len(b))
	p.prog.update(*p.n)
	return len(b), nil
}

// openTarget opens the target for writing. A regular file is truncated
// and re-extended so that skipped regions are holes that read as zeros;
// a block device must be large enough.
func openTarget(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	blk, err := isBlockDevice(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	if blk {
		n, err := targetSize(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("target %s: %w", path, err)
		}
		if n < size {
			f.Close()
			return nil, fmt.Errorf("target %s: disk has %d bytes, the image needs %d", path, n, size)
		}
		return f, nil
	}
	// A regular file: make [0, size) read as zeros so skipped regions
	// need no writes. A larger file (a VM's disk image) keeps its size
	// and gets a hole punched; a smaller one is truncated and extended.
	fi, err := f.Stat()
	if err == nil && fi.Size() > size {
		err = zeroRange(f, 0, size)
		if errors.Is(err, errNotSupported) {
			err = writeZeros(f, 0, size)
		}
	} else if err == nil {
		if err = f.Truncate(0); err == nil {
			err = f.Truncate(size)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	return f, nil
}

// sparseWriter writes the decompressed stream at its offsets, leaving
// out the zero regions: those named by the block map or, without a map,
// every all-zero 64 KiB block. Skipped regions on a block device are
// zeroed with BLKZEROOUT (cheap on NVMe); a fresh regular file already
// reads zeros there.
type sparseWriter struct {
	f        *os.File
	blockMap []imagefmt.Extent
	mapIdx   int
	prog     *progressTicker
	isBlk    bool

	off              int64 // stream offset
	written, skipped int64
	zeroStart        int64 // pending zero run [zeroStart, off) on a block device; -1 none
}

// pipe overlaps reading with consuming: a goroutine fills the buffers
// of bufs with read, in turn, and consume takes them in order. read says
// how many bytes it put in the buffer and, with io.EOF, that they were
// the last, or with another error why reading stopped (pipe returns that
// error after consuming the bytes that came with it). When consume fails,
// stop (if not nil) must make a blocked read return. pipe returns only
// once the reading goroutine has ended, so nothing reads afterwards.
func pipe(bufs [][]byte, read func(buf []byte) (int, error), consume func(p []byte) error, stop func()) error {
	type filled struct {
		buf []byte
		n   int
		err error
	}
	free := make(chan []byte, len(bufs))
	for _, b := range bufs {
		free <- b
	}
	full := make(chan filled, len(bufs))
	quit := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(full)
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			n, err := read(buf)
			select {
			case full <- filled{buf, n, err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	fail := func(err error) error {
		close(quit)
		if stop != nil {
			stop()
		}
		<-readerDone
		return err
	}
	for c := range full {
		if c.n > 0 {
			if err := consume(c.buf[:c.n]); err != nil {
				return fail(err)
			}
		}
		if c.err == io.EOF {
			break
		}
		if c.err != nil {
			return fail(c.err)
		}
		free <- c.buf
	}
	<-readerDone
	return nil
}

// copyFrom writes size bytes of r, reading (the network and
// decompression) while it writes (pipe). stop must make a blocked read
// return (it cancels the download).
func (w *sparseWriter) copyFrom(ctx context.Context, r io.Reader, size int64, stop func()) error {
	var err error
	if w.isBlk, err = isBlockDevice(w.f); err != nil {
		return err
	}
	w.zeroStart = -1
	var read int64
	err = pipe(buffers(3), func(buf []byte) (int, error) {
		n, err := io.ReadFull(r, buf)
		read += int64(n)
		switch {
		case err == io.ErrUnexpectedEOF:
			err = io.EOF // a short last buffer
		case err == nil && read > size:
			err = fmt.Errorf("reading image at byte %d: image is longer than its declared %d bytes", read, size)
		case err != nil && err != io.EOF:
			err = fmt.Errorf("reading image at byte %d: %w", read, err)
		}
		return n, err
	}, func(p []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if w.off+int64(len(p)) > size {
			return fmt.Errorf("image is longer than its declared %d bytes", size)
		}
		if err := w.chunk(p); err != nil {
			return err
		}
		w.prog.update(w.off)
		return nil
	}, stop)
	if err != nil {
		return err
	}
	if err := w.flushZeros(); err != nil {
		return err
	}
	if w.off != size {
		return fmt.Errorf("image ended at %d bytes, expected %d", w.off, size)
	}
	return nil
}

// buffers are n buffers of chunkSize for pipe.
func buffers(n int) [][]byte {
	out := make([][]byte, n)
	for k := range out {
		out[k] = make([]byte, chunkSize)
	}
	return out
}

// chunk writes one buffer that starts at w.off.
func (w *sparseWriter) chunk(p []byte) error {
	if len(w.blockMap) == 0 {
		return w.chunkScan(p)
	}
	end := w.off + int64(len(p))
	for w.off < end {
		n, data := w.nextSegment(end)
		seg := p[:n]
		p = p[n:]
		if data {
			if err := w.flushZeros(); err != nil {
				return err
			}
			if _, err := w.f.WriteAt(seg, w.off); err != nil {
				return fmt.Errorf("write at %d: %w", w.off, err)
			}
			w.written += n
		} else {
			if w.zeroStart < 0 {
				w.zeroStart = w.off
			}
			w.skipped += n
		}
		w.off += n
	}
	return nil
}

// nextSegment returns the length of the run starting at w.off (ending no
// later than end) and whether it holds data.
func (w *sparseWriter) nextSegment(end int64) (int64, bool) {
	for w.mapIdx < len(w.blockMap) && w.blockMap[w.mapIdx].Offset+w.blockMap[w.mapIdx].Length <= w.off {
		w.mapIdx++
	}
	if w.mapIdx == len(w.blockMap) {
		return end - w.off, false
	}
	r := w.blockMap[w.mapIdx]
	if w.off < r.Offset {
		return min(r.Offset, end) - w.off, false
	}
	return min(r.Offset+r.Length, end) - w.off, true
}

// chunkScan handles the no-block-map case: classify each zeroBlock-sized
// piece (aligned to the image) and coalesce runs.
func (w *sparseWriter) chunkScan(p []byte) error {
	for len(p) > 0 {
		n := int64(zeroBlock) - w.off%zeroBlock
		n = min(n, int64(len(p)))
		data := !imagefmt.IsZero(p[:n])
		// Extend the run while the kind stays the same, to write big.
		for n < int64(len(p)) {
			m := min(int64(zeroBlock), int64(len(p))-n)
			if imagefmt.IsZero(p[n:n+m]) == data {
				break
			}
			n += m
		}
		if data {
			if err := w.flushZeros(); err != nil {
				return err
			}
			if _, err := w.f.WriteAt(p[:n], w.off); err != nil {
				return fmt.Errorf("write at %d: %w", w.off, err)
			}
			w.written += n
		} else {
			if w.zeroStart < 0 {
				w.zeroStart = w.off
			}
			w.skipped += n
		}
		w.off += n
		p = p[n:]
	}
	return nil
}

// flushZeros makes the pending zero run read as zeros on a block device.
func (w *sparseWriter) flushZeros() error {
	if w.zeroStart < 0 {
		return nil
	}
	start, n := w.zeroStart, w.off-w.zeroStart
	w.zeroStart = -1
	if !w.isBlk || n == 0 {
		return nil // a truncated file reads zeros already
	}
	err := zeroRange(w.f, start, n)
	if errors.Is(err, errNotSupported) {
		return writeZeros(w.f, start, n)
	}
	if err != nil {
		return fmt.Errorf("zero [%d,+%d): %w", start, n, err)
	}
	return nil
}

// writeZeros is the slow fallback for devices without write-zeroes.
func writeZeros(f *os.File, off, n int64) error {
	buf := make([]byte, min(n, chunkSize))
	for n > 0 {
		m := min(n, int64(len(buf)))
		if _, err := f.WriteAt(buf[:m], off); err != nil {
			return fmt.Errorf("write zeros at %d: %w", off, err)
		}
		off += m
		n -= m
	}
	return nil
}

// directAlign is the alignment O_DIRECT reads get (buffer, offset,
// length): a page, which covers 512-byte and 4 KiB logical blocks.
const directAlign = 4096

// readBackSHA256 hashes the first size bytes of the target as stored on
// the device, not as cached: it reopens path with O_DIRECT (no page
// cache at all, and the reads go straight into its buffers), or where
// the file system refuses O_DIRECT (tmpfs) reads f after dropping its
// page cache. A reader goroutine keeps the next chunks in flight while
// this one hashes, so the device's latency hides behind the hashing: on
// a real disk reading and hashing (SHA-NI) run at comparable speeds. In
// a TCG guest the read-back is all hash (bench/pxe/tcgprobe: 48 MiB read
// with O_DIRECT in 0.04 s, hashed in 2 s); O_DIRECT saved 0.1 s there
// against buffered reads, the pipeline nothing measurable.
func readBackSHA256(ctx context.Context, path string, f *os.File, size int64, prog *progressTicker) (string, error) {
	if d, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		got, err := hashReads(ctx, d, true, size, prog)
		d.Close()
		// Some file systems take the flag at open and refuse the reads.
		if !errors.Is(err, unix.EINVAL) {
			return got, err
		}
	}
	dropCache(f)
	return hashReads(ctx, f, false, size, prog)
}

// hashReads is readBackSHA256's pipeline: size bytes of src from offset
// 0, in chunkSize reads (aligned for O_DIRECT when direct), hashed in
// order while the next is read (pipe).
func hashReads(ctx context.Context, src *os.File, direct bool, size int64, prog *progressTicker) (string, error) {
	const nbuf = 3
	// Page-aligned buffers, as O_DIRECT wants: anonymous mappings.
	mem, err := unix.Mmap(-1, 0, nbuf*chunkSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return "", fmt.Errorf("read buffers: %w", err)
	}
	defer unix.Munmap(mem)
	bufs := make([][]byte, nbuf)
	for k := range bufs {
		bufs[k] = mem[k*chunkSize : (k+1)*chunkSize]
	}
	h := sha256.New()
	var readOff, hashed int64
	err = pipe(bufs, func(buf []byte) (int, error) {
		if readOff >= size {
			return 0, io.EOF
		}
		want := min(int64(chunkSize), size-readOff)
		ask := want
		if direct {
			ask = (want + directAlign - 1) / directAlign * directAlign
		}
		n, err := src.ReadAt(buf[:ask], readOff)
		switch {
		case int64(n) >= want:
			n, err = int(want), nil // past the image (alignment): not hashed
		case err == nil || err == io.EOF:
			// A short read: the target ends inside the image.
			err = fmt.Errorf("read at %d: target ends at %d, the image has %d bytes", readOff, readOff+int64(n), size)
		default:
			err = fmt.Errorf("read at %d: %w", readOff+int64(n), err)
		}
		readOff += int64(n)
		return n, err
	}, func(p []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		h.Write(p)
		hashed += int64(len(p))
		prog.update(hashed)
		return nil
	}, nil)
	if err != nil {
		return "", err
	}
	if hashed != size {
		return "", fmt.Errorf("read %d bytes back, the image has %d", hashed, size)
	}
	prog.finish(size)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// progressTicker calls fn at most every interval (and once at the end).
type progressTicker struct {
	fn       ProgressFunc
	step     string
	total    int64
	every    time.Duration
	last     time.Time
	lastN    int64
	start    time.Time
	finished bool
}

func newProgressTicker(fn ProgressFunc, step string, total int64, every time.Duration) *progressTicker {
	now := time.Now()
	return &progressTicker{fn: fn, step: step, total: total, every: every, last: now, start: now}
}

func (p *progressTicker) update(n int64) {
	if p.fn == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < p.every {
		return
	}
	rate := int64(float64(n-p.lastN) / now.Sub(p.last).Seconds())
	p.last, p.lastN = now, n
	p.fn(wire.Progress{Step: p.step, Bytes: n, Total: p.total, Rate: rate})
}

func (p *progressTicker) finish(n int64) {
	if p.fn == nil || p.finished {
		return
	}
	p.finished = true
	d := time.Since(p.start).Seconds()
	var rate int64
	if d > 0 {
		rate = int64(float64(n) / d)
	}
	p.fn(wire.Progress{Step: p.step, Bytes: n, Total: p.total, Rate: rate})
}
