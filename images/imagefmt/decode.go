package imagefmt

import (
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// MaxZstdWindow bounds the memory a zstd stream may ask the decoder for.
// `zstd --long=27` (128 MiB) and every ordinary level fit. The importer
// refuses a stream that asks for more, so the agent, which has only the
// machine's RAM, never meets one.
const MaxZstdWindow = 256 << 20

// ErrTooLarge is wrapped when a stream decodes to more bytes than allowed.
var ErrTooLarge = errors.New("image too large")

// TooLargeError is a stream that decoded past its limit: a decompression
// bomb, an image larger than the service accepts, or a stream longer than
// the size the agent was told.
type TooLargeError struct {
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the image decompresses to more than %d bytes, the limit", e.Limit)
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// Decoder reads the uncompressed bytes of an image stream.
type Decoder struct {
	r       io.Reader // the decompressor's output
	release func()
	format  Format
	limit   int64
	n       int64
	head    []byte // first bytes, until CheckDisk has seen them
	checked bool
}

// NewDecoder returns a reader of the uncompressed bytes of r in format f.
// It fails a Read once more than limit bytes come out (limit <= 0: no
// limit), and refuses a compressed stream that holds a virtual-disk
// container (see Detect) as soon as its first bytes are out. Close releases
// the decompressor.
func NewDecoder(f Format, r io.Reader, limit int64) (*Decoder, error) {
	d := &Decoder{format: f, limit: limit, release: func() {}}
	switch f {
	case Raw:
		d.r = r
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("not a valid %s stream: %w", f, err)
		}
		d.r, d.release = zr, func() { zr.Close() }
	case Zstd:
		// Two goroutines: one decodes blocks while the other hands them
		// out, which is all a single stream can use.
		zr, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(MaxZstdWindow), zstd.WithDecoderConcurrency(2))
		if err != nil {
			return nil, fmt.Errorf("not a valid %s stream: %w", f, err)
		}
		d.r, d.release = zr, zr.Close
	case XZ:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("not a valid %s stream: %w", f, err)
		}
		d.r = zr
	default:
		return nil, &UnknownFormatError{Name: string(f)}
	}
	return d, nil
}

// Read reads uncompressed bytes.
func (d *Decoder) Read(p []byte) (int, error) {
	if !d.checked {
		if err := d.checkHead(); err != nil {
			return 0, err
		}
	}
	if len(d.head) > 0 {
		n := copy(p, d.head)
		d.head = d.head[n:]
		return n, nil
	}
	if d.limit > 0 && d.n >= d.limit {
		// Anything more is one byte too many; a read of 1 tells an
		// exact-size stream (EOF) from a longer one.
		var one [1]byte
		n, err := d.r.Read(one[:])
		if n > 0 {
			return 0, &TooLargeError{Limit: d.limit}
		}
		return 0, err
	}
	if d.limit > 0 && int64(len(p)) > d.limit-d.n {
		p = p[:d.limit-d.n]
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	return n, err
}

// checkHead reads the first HeadSize uncompressed bytes (fewer if the
// stream is shorter) and refuses a container before any byte goes out:
// the agent must not write a qcow2 header over a disk.
func (d *Decoder) checkHead() error {
	d.checked = true
	head := make([]byte, HeadSize)
	n, err := io.ReadFull(d.r, head)
	if err == io.ErrUnexpectedEOF {
		err = nil
	}
	if err != nil && err != io.EOF {
		return err
	}
	d.head = head[:n]
	d.n = int64(n)
	if cerr := CheckDisk(d.head); cerr != nil {
		ce := cerr.(*ContainerError)
		ce.Inside = d.format
		return ce
	}
	if d.limit > 0 && d.n > d.limit {
		return &TooLargeError{Limit: d.limit}
	}
	return nil
}

// Close releases the decompressor. It does not close the underlying reader.
func (d *Decoder) Close() error {
	d.release()
	return nil
}
