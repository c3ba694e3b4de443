package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ReadModulesOrder reads a modules.order file; blank lines and lines
// starting with # are ignored.
func ReadModulesOrder(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// moduleImage returns the uncompressed ELF image of a compressed module
// (.ko.xz, .ko.zst, .ko.gz) for init_module; ok is false for a plain .ko,
// which is loaded with finit_module straight from the file.
func moduleImage(path string) (img []byte, ok bool, err error) {
	var open func(io.Reader) (io.Reader, error)
	switch {
	case strings.HasSuffix(path, ".ko"):
		return nil, false, nil
	case strings.HasSuffix(path, ".ko.xz"):
		open = func(r io.Reader) (io.Reader, error) { return xz.NewReader(r) }
	case strings.HasSuffix(path, ".ko.zst"):
		open = func(r io.Reader) (io.Reader, error) {
			z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, err
			}
			return z.IOReadCloser(), nil
		}
	case strings.HasSuffix(path, ".ko.gz"):
		open = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
	default:
		return nil, false, fmt.Errorf("module %s: unknown file type", path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("module: %w", err)
	}
	r, err := open(bytes.NewReader(raw))
	if err != nil {
		return nil, false, fmt.Errorf("module %s: %w", path, err)
	}
	img, err = io.ReadAll(r)
	if err != nil {
		return nil, false, fmt.Errorf("module %s: %w", path, err)
	}
	return img, true, nil
}
