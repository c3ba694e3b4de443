package images

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Format is how an image's bytes are stored: a raw disk image, or one
// compressed with gzip, zstd or xz. The agent decompresses while it writes.
type Format string

// The formats the store accepts, named as the CLI names them.
const (
	FormatRaw  Format = "raw"
	FormatGzip Format = "raw.gz"
	FormatZstd Format = "raw.zst"
	FormatXZ   Format = "raw.xz"
)

// Formats lists the accepted formats, for help texts and error messages.
var Formats = []Format{FormatRaw, FormatGzip, FormatZstd, FormatXZ}

// ParseFormat accepts a format name as the CLI spells it ("" means "detect
// it"). A few common aliases (gz, gzip, zst, zstd, xz) are accepted too,
// because people type the file extension.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return "", nil
	case "raw", "img":
		return FormatRaw, nil
	case "raw.gz", "gz", "gzip":
		return FormatGzip, nil
	case "raw.zst", "zst", "zstd":
		return FormatZstd, nil
	case "raw.xz", "xz":
		return FormatXZ, nil
	}
	return "", &FormatError{Declared: Format(s), Msg: fmt.Sprintf("unknown format %q: use one of %s", s, formatList())}
}

func formatList() string {
	var b strings.Builder
	for i, f := range Formats {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(f))
	}
	return b.String()
}

var (
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// DetectFormat names the format of a stream from its first bytes. Anything
// that is not gzip, zstd or xz is a raw image: a disk image has no magic of
// its own (it may start with an MBR, a GPT protective MBR, or zeros).
func DetectFormat(head []byte) Format {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return FormatGzip
	case bytes.HasPrefix(head, magicZstd):
		return FormatZstd
	case bytes.HasPrefix(head, magicXZ):
		return FormatXZ
	}
	return FormatRaw
}

// maxZstdWindow bounds the memory a zstd stream may ask the decoder for.
// `zstd --long=27` (128 MiB) and all ordinary levels fit; a stream asking
// for more is refused at import rather than later by the agent, which has
// only the machine's RAM.
const maxZstdWindow = 256 << 20

// NewDecoder returns a reader of the uncompressed bytes of r in format f,
// and a function that releases the decoder's resources. The agent can use
// it too, so that it reads exactly what the import accepted.
func NewDecoder(f Format, r io.Reader) (io.Reader, func(), error) {
	switch f {
	case FormatRaw:
		return r, func() {}, nil
	case FormatGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case FormatZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(2))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case FormatXZ:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unknown format %q", f)
}
