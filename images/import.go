package images

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/internal/atomicfile"
	"github.com/metalhall/metalhall/inventory"
)

// ImportOptions describe an image being imported.
type ImportOptions struct {
	Name string
	// SHA256 is the checksum the caller expects, optional. It may be that
	// of the file as given (what a download page publishes next to a
	// .raw.xz) or that of the uncompressed image; it must match one.
	SHA256 string
	// Format is what the caller says the stream is, optional. The magic
	// bytes decide; a declared format that disagrees is refused.
	Format string
	// Tenant makes the image private to a tenant.
	Tenant string
}

// chunkSize is the unit of the import pipeline. 1 MiB amortises channel
// hand-offs and syscalls; nChunks of them bound an import's memory.
const (
	chunkSize = 1 << 20
	nChunks   = 8
)

// Import reads an image from r into the store and adds it to the catalogue.
// It returns the catalogue entry. On any error — bad input, a mismatched
// checksum or format, r failing, ctx cancelled (the client went away), an
// image past Options.MaxImageSize or the tenant's quota — nothing is left
// behind, and decoding stops within one chunk.
//
// The stream is read once: each chunk goes, in parallel, to the temp file,
// to the sha256 of the blob, and to the decompressor (or, for a raw image,
// straight to the zero-mapper), whose output feeds the uncompressed sha256
// and the zero-mapper. So an import takes about as long as the slowest of
// those, not their sum.
//
// ctx is checked between chunks; a Read blocked on a network peer returns
// when that peer goes away (an HTTP request body does on disconnect, and
// ImportURL's body when ctx is cancelled).
func (s *Store) Import(ctx context.Context, r io.Reader, opts ImportOptions) (*inventory.Image, error) {
	img, err := s.importImage(ctx, r, opts)
	if err != nil {
		return nil, wrapImage(opts.Name, err)
	}
	return img, nil
}

// wrapImage names the image in an error, unless the inventory's error
// already does ("image "x" already exists").
func wrapImage(name string, err error) error {
	var ee *inventory.ExistsError
	var ce *inventory.ConflictError
	if errors.As(err, &ee) && ee.Kind == "image" || errors.As(err, &ce) {
		return err
	}
	return fmt.Errorf("image %q: %w", name, err)
}

func (s *Store) importImage(ctx context.Context, r io.Reader, opts ImportOptions) (*inventory.Image, error) {
	start := time.Now()
	if err := inventory.ValidateImageName(opts.Name); err != nil {
		return nil, err
	}
	want := strings.ToLower(strings.TrimSpace(opts.SHA256))
	if want != "" && !ValidSHA256(want) {
		return nil, invalid("sha256", "%q is not a sha256 (64 hex digits)", opts.SHA256)
	}
	declared, err := imagefmt.Parse(opts.Format)
	if err != nil {
		return nil, &FormatError{Declared: imagefmt.Format(opts.Format), Err: err}
	}
	// Refuse what CreateImage would refuse before streaming gigabytes.
	// Names are scoped: a tenant's are looked up in its own namespace.
	ref := (&inventory.Image{Name: opts.Name, Tenant: opts.Tenant}).Ref()
	if _, err := s.cat.Image(ctx, ref); err == nil {
		return nil, &inventory.ExistsError{Kind: "image", Name: opts.Name}
	} else if !errors.Is(err, inventory.ErrNotFound) {
		return nil, err
	}
	if opts.Tenant != "" {
		if _, err := s.cat.Tenant(ctx, opts.Tenant); err != nil {
			return nil, err
		}
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		return nil, &BusyError{Limit: cap(s.slots)}
	}
	if !s.reserve(ref) {
		return nil, &inventory.ConflictError{Msg: fmt.Sprintf("image %q is being imported by another request: wait for it, or use another name", opts.Name)}
	}
	defer s.release(ref)
	q, err := s.startQuota(ctx, opts.Tenant)
	if err != nil {
		return nil, err
	}
	defer q.done()

	tmp, f, err := s.createTemp()
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
		s.mu.Lock()
		delete(s.temps, tmp)
		s.mu.Unlock()
	}()

	res, err := s.ingest(ctx, r, f, declared, q)
	if err != nil {
		return nil, err
	}
	if want != "" && want != res.sha && want != res.bmap.SHA256 {
		ce := &ChecksumError{Expected: want, Got: res.sha}
		if res.format != imagefmt.Raw {
			ce.GotUncompressed = res.bmap.SHA256
		}
		return nil, ce
	}
	if !s.noSync {
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}

	img := inventory.Image{
		Name: opts.Name, Format: string(res.format), SHA256: res.sha, Size: res.size,
		UncompressedSHA256: res.bmap.SHA256, UncompressedSize: res.bmap.ImageSize,
		MappedBytes: res.bmap.MappedBytes, BlockMapRef: blockMapRef(res.sha), Tenant: opts.Tenant,
	}
	// The client may have gone away after its last byte, while the
	// decoder caught up: what it did not wait for is not committed.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out, err := s.commitBlob(ctx, tmp, res, img)
	if err != nil {
		return nil, err
	}
	committed = true
	el := time.Since(start)
	s.log.Info("image imported", "image", out.Ref(), "format", out.Format, "sha256", out.SHA256,
		"size", out.Size, "uncompressed_size", out.UncompressedSize, "mapped_bytes", out.MappedBytes,
		"seconds", el.Seconds(), "mb_per_s", float64(out.Size)/1e6/max(el.Seconds(), 1e-9))
	return out, nil
}

func (s *Store) reserve(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.importing[name] {
		return false
	}
	s.importing[name] = true
	return true
}

func (s *Store) release(name string) {
	s.mu.Lock()
	delete(s.importing, name)
	s.mu.Unlock()
}

// createTemp makes a temp file in the blob directory's file system (so the
// final rename is atomic), registered before it exists so GC leaves it be.
func (s *Store) createTemp() (string, *os.File, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	p := filepath.Join(s.tmpDir(), "import-"+hexSum(rnd[:])+".part")
	s.mu.Lock()
	s.temps[p] = true
	s.mu.Unlock()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		s.mu.Lock()
		delete(s.temps, p)
		s.mu.Unlock()
		return "", nil, err
	}
	return p, f, nil
}

// commitBlob moves the verified temp file into place (or drops it when the
// same content is already stored), writes the block map beside it, and adds
// the catalogue entry, all under the commit lock so GC cannot interleave.
func (s *Store) commitBlob(ctx context.Context, tmp string, res *ingestResult, img inventory.Image) (*inventory.Image, error) {
	s.commit.Lock()
	defer s.commit.Unlock()
	// Commits are serialised, so this count of stored bytes is exact: two
	// imports that each fit cannot both commit past the quota.
	if err := s.checkQuota(ctx, img.Tenant, img.Size); err != nil {
		return nil, err
	}
	placed, err := s.placeBlob(tmp, res)
	if err != nil {
		return nil, err
	}
	out, err := s.cat.CreateImage(ctx, img)
	if err != nil {
		if placed {
			if shared, rerr := s.referenced(ctx, res.sha); rerr == nil && !shared {
				s.removeBlob(res.sha)
			}
		}
		return nil, err
	}
	return out, nil
}

// placeBlob moves a verified temp file to its blob path, with its block
// map beside it, or drops it when the same content is already stored. It
// says whether it placed the file. s.commit is held.
func (s *Store) placeBlob(tmp string, res *ingestResult) (placed bool, err error) {
	blob, err := s.BlobPath(res.sha)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o750); err != nil {
		return false, err
	}
	data, err := json.Marshal(res.bmap)
	if err != nil {
		return false, err
	}
	// The map goes first: a blob in place always has its map.
	if err := atomicfile.WriteFile(blockMapPath(blob), data, atomicfile.Options{Perm: 0o640, NoSync: s.noSync}); err != nil {
		return false, fmt.Errorf("write block map: %w", err)
	}
	if _, err := os.Stat(blob); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(tmp, blob); err != nil {
			return false, err
		}
		return true, s.syncDir(filepath.Dir(blob))
	} else if err != nil {
		return false, err
	}
	os.Remove(tmp) // deduplicated: the same bytes are already stored
	return false, nil
}

func (s *Store) syncDir(dir string) error {
	if s.noSync {
		return nil
	}
	return atomicfile.SyncDir(dir)
}

type ingestResult struct {
	format imagefmt.Format
	sha    string // of the stream as received
	size   int64
	bmap   *imagefmt.BlockMap
}

// chunk is one buffer of the stream, shared read-only by the consumers;
// the last to finish with it returns it to the free list.
type chunk struct {
	buf  []byte
	n    int
	refs sync.WaitGroup
}

// pipeline fans the chunks of one stream out to consumers, each in its own
// goroutine. The first error stops the whole import.
type pipeline struct {
	free chan *chunk
	outs []chan *chunk
	wg   sync.WaitGroup

	once   sync.Once
	err    error
	failed chan struct{}
}

func (p *pipeline) fail(err error) {
	p.once.Do(func() { p.err = err; close(p.failed) })
}

func (p *pipeline) isFailed() bool {
	select {
	case <-p.failed:
		return true
	default:
		return false
	}
}

// consume runs fn on every chunk, then done (with the pipeline's error, if
// any). A consumer that has failed keeps draining so the producer never
// blocks on it.
func (p *pipeline) consume(fn func([]byte) error, done func(error)) {
	ch := make(chan *chunk, nChunks)
	p.outs = append(p.outs, ch)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for c := range ch {
			if !p.isFailed() {
				if err := fn(c.buf[:c.n]); err != nil {
					p.fail(err)
				}
			}
			c.refs.Done()
		}
		if done != nil {
			var err error
			if p.isFailed() {
				err = p.err
			}
			done(err)
		}
	}()
}

// ingest streams r into f and computes everything Import records. A
// declared format that the first bytes contradict fails at once.
func (s *Store) ingest(ctx context.Context, r io.Reader, f *os.File, declared imagefmt.Format, q *quota) (*ingestResult, error) {
	p := &pipeline{free: make(chan *chunk, nChunks), failed: make(chan struct{})}
	for range nChunks {
		p.free <- &chunk{buf: make([]byte, chunkSize)}
	}

	// The first chunk decides the format, so it is read before the
	// consumers are set up.
	first := <-p.free
	n, err := fill(r, first.buf)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read: %w", err)
	}
	if n == 0 {
		return nil, invalid("image", "the stream is empty")
	}
	eof := err == io.EOF
	first.n = n
	format, err := imagefmt.Detect(first.buf[:n])
	if err != nil {
		return nil, &FormatError{Declared: declared, Err: err}
	}
	res := &ingestResult{format: format}
	if declared != "" && declared != res.format {
		return nil, &FormatError{Declared: declared, Detected: res.format}
	}

	blobHash := sha256.New()
	zm := imagefmt.NewMapper(s.opts.BlockSize)
	w := newSyncWriter(f, s.noSync)
	p.consume(w.Write, nil)
	p.consume(hashWrite(blobHash), nil)
	p.consume(q.add, nil)

	var decodeDone chan struct{}
	rawHash := blobHash
	if res.format == imagefmt.Raw {
		var seen int64
		p.consume(func(b []byte) error {
			if seen += int64(len(b)); seen > s.opts.MaxImageSize {
				return &TooLargeError{imagefmt.TooLargeError{Limit: s.opts.MaxImageSize}}
			}
			zm.Write(b)
			return nil
		}, nil)
	} else {
		rawHash = sha256.New()
		pr, pw := io.Pipe()
		p.consume(func(b []byte) error {
			if _, err := pw.Write(b); err != nil {
				if errors.Is(err, io.ErrClosedPipe) {
					return &FormatError{Detected: res.format, Msg: fmt.Sprintf("data after the end of the %s stream", res.format)}
				}
				return err
			}
			return nil
		}, func(err error) {
			if err != nil {
				pw.CloseWithError(err)
			} else {
				pw.Close()
			}
		})
		decodeDone = make(chan struct{})
		go func() {
			defer close(decodeDone)
			// The decoder's output goes to two consumers in this one
			// goroutine: hashing is the slow one, the zero check is cheap.
			// stopWriter ends a decode that no longer matters — the
			// client went away, another consumer failed — at its next
			// block: a bomb stops here, not after minutes of CPU.
			out := &stopWriter{ctx: ctx, p: p, w: io.MultiWriter(rawHash, zm)}
			err := decode(res.format, pr, out, s.opts.MaxImageSize)
			if err != nil && !p.isFailed() {
				p.fail(decodeError(res.format, err, s.opts.MaxImageSize))
			}
			// Unblock the feeder if the decoder stopped early: any bytes
			// still coming are trailing garbage (or the import failed).
			pr.CloseWithError(io.ErrClosedPipe)
		}()
	}

	// Produce. At most nChunks chunks are in flight and each output
	// channel holds nChunks, so the sends below never block.
	dispatch := func(c *chunk) {
		res.size += int64(c.n)
		c.refs.Add(len(p.outs))
		go func() { c.refs.Wait(); p.free <- c }()
		for _, out := range p.outs {
			out <- c
		}
	}
	dispatch(first)
	for !eof && !p.isFailed() {
		if err := ctx.Err(); err != nil {
			p.fail(err)
			break
		}
		var c *chunk
		select {
		case c = <-p.free:
		case <-p.failed:
		case <-ctx.Done():
			p.fail(ctx.Err())
		}
		if c == nil {
			break
		}
		n, err := fill(r, c.buf)
		c.n = n
		if n > 0 {
			dispatch(c)
		} else {
			p.free <- c
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				err = cerr
			}
			p.fail(fmt.Errorf("read after %d bytes: %w", res.size, err))
		}
	}
	for _, out := range p.outs {
		close(out)
	}
	p.wg.Wait()
	if decodeDone != nil {
		<-decodeDone
	}
	if p.isFailed() {
		return nil, p.err
	}
	if err := w.err; err != nil {
		return nil, err
	}
	res.sha = hexSum(blobHash.Sum(nil))
	res.bmap = zm.Finish(hexSum(rawHash.Sum(nil)))
	return res, nil
}

// fill reads until buf is full or r fails. Unlike io.ReadFull it passes
// the reader's own io.ErrUnexpectedEOF through as an error: that is what
// an HTTP request body returns when the client goes away before sending
// Content-Length bytes, and it must fail the import, not end it.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func hashWrite(h hash.Hash) func([]byte) error {
	return func(b []byte) error { h.Write(b); return nil }
}

// decode copies the uncompressed stream of r to w, up to limit bytes.
func decode(f imagefmt.Format, r io.Reader, w io.Writer, limit int64) error {
	dec, err := imagefmt.NewDecoder(f, r, limit)
	if err != nil {
		return err
	}
	defer dec.Close()
	_, err = io.Copy(w, dec)
	return err
}

// decodeError says what a failed decode means for the import.
func decodeError(f imagefmt.Format, err error, limit int64) error {
	var ce *imagefmt.ContainerError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &ce):
		return &FormatError{Detected: f, Err: ce}
	case errors.Is(err, imagefmt.ErrTooLarge):
		return &TooLargeError{imagefmt.TooLargeError{Limit: limit}}
	}
	return &FormatError{Detected: f, Msg: fmt.Sprintf("not a valid %s stream: %v", f, err)}
}

// stopWriter fails its writes once ctx is done or the pipeline has failed.
type stopWriter struct {
	ctx context.Context
	p   *pipeline
	w   io.Writer
}

func (s *stopWriter) Write(b []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.p.isFailed() {
		return 0, s.p.err
	}
	return s.w.Write(b)
}

// quota tracks one import's bytes against its tenant's image quota.
type quota struct {
	s      *Store
	tenant string
	stored int64 // the tenant's stored bytes when the import started
	added  int64 // bytes this import has received
}

// startQuota counts what the tenant stores now; the import's own bytes
// join the tenant's in-flight count as they arrive. Staff imports (no
// tenant) and a negative quota are not limited.
func (s *Store) startQuota(ctx context.Context, tenant string) (*quota, error) {
	q := &quota{s: s, tenant: tenant}
	if tenant == "" || s.opts.TenantQuota < 0 {
		return q, nil
	}
	var err error
	if q.stored, err = s.tenantBytes(ctx, tenant); err != nil {
		return nil, err
	}
	if q.stored >= s.opts.TenantQuota {
		return nil, &QuotaError{Tenant: tenant, Quota: s.opts.TenantQuota, Used: q.stored}
	}
	return q, nil
}

// add is a pipeline consumer: it fails the import as soon as the tenant's
// stored bytes plus all its imports in flight pass the quota.
func (q *quota) add(b []byte) error {
	if q.tenant == "" || q.s.opts.TenantQuota < 0 {
		return nil
	}
	n := int64(len(b))
	q.s.mu.Lock()
	q.added += n
	q.s.inflight[q.tenant] += n
	flying := q.s.inflight[q.tenant]
	q.s.mu.Unlock()
	if q.stored+flying > q.s.opts.TenantQuota {
		return &QuotaError{Tenant: q.tenant, Quota: q.s.opts.TenantQuota, Used: q.stored + flying - q.added, Adding: q.added}
	}
	return nil
}

// done takes the import's bytes out of the in-flight count.
func (q *quota) done() {
	if q.added == 0 {
		return
	}
	q.s.mu.Lock()
	if q.s.inflight[q.tenant] -= q.added; q.s.inflight[q.tenant] <= 0 {
		delete(q.s.inflight, q.tenant)
	}
	q.s.mu.Unlock()
}

// checkQuota is the authoritative check, made under the commit lock.
func (s *Store) checkQuota(ctx context.Context, tenant string, size int64) error {
	if tenant == "" || s.opts.TenantQuota < 0 {
		return nil
	}
	stored, err := s.tenantBytes(ctx, tenant)
	if err != nil {
		return err
	}
	if stored+size > s.opts.TenantQuota {
		return &QuotaError{Tenant: tenant, Quota: s.opts.TenantQuota, Used: stored, Adding: size}
	}
	return nil
}

// tenantBytes is the stored size of a tenant's own images.
func (s *Store) tenantBytes(ctx context.Context, tenant string) (int64, error) {
	imgs, err := s.cat.Images(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, im := range imgs {
		if im.Tenant == tenant {
			n += im.Size
		}
	}
	return n, nil
}
