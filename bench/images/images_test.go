// Package images_test benchmarks the import pipeline in-process, next to
// sha256 alone over the same bytes (the floor any verified import pays):
//
//	go test -run '^$' -bench . -benchtime 5x ./bench/images/
//
// The 2 GiB end-to-end comparisons (vs sha256sum, vs nginx) are run.sh's.
package images_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
)

const imageSize = 256 << 20

// diskImage is shaped like the one run.sh makes: random, text-like and
// zero megabytes.
func diskImage() []byte {
	b := make([]byte, imageSize)
	r := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < len(b); off += 1 << 20 {
		switch k := r.IntN(100); {
		case k < 40:
			for i := off; i < off+1<<20; i += 8 {
				v := r.Uint64()
				for j := range 8 {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		case k < 65:
			copy(b[off:off+1<<20], bytes.Repeat([]byte("lorem ipsum /usr/lib/libc.so.6 "), 1<<20/31+1))
		}
	}
	return b
}

func BenchmarkImport(b *testing.B) {
	raw := diskImage()
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(raw)
	zw.Close()
	for _, c := range []struct {
		name string
		data []byte
	}{{"raw", raw}, {"zstd", zbuf.Bytes()}} {
		b.Run("sha256-only/"+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			for b.Loop() {
				h := sha256.New()
				h.Write(c.data)
				h.Sum(nil)
			}
		})
		b.Run("import/"+c.name, func(b *testing.B) {
			dir := b.TempDir()
			inv, err := inventory.Open(filepath.Join(dir, "db"), inventory.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer inv.Close()
			st, err := images.Open(dir, inv, images.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(c.data)))
			i := 0
			for b.Loop() {
				name := fmt.Sprintf("img-%d", i)
				i++
				if _, err := st.Import(context.Background(), io.NopCloser(bytes.NewReader(c.data)), images.ImportOptions{Name: name}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := st.Delete(context.Background(), name); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
