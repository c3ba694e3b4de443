// Package agent_test measures the agent's image write path — HTTP ->
// zstd -> zero-skip -> target, then fsync and read-back sha256 verify —
// side by side with the classic shell pipeline on the same image in the
// same run: curl | zstd -d | dd conv=fsync, then sha256sum of the target.
//
//	go test -run '^$' -bench . -benchtime 3x ./bench/agent/
//
// The server is an httptest server on loopback serving the compressed
// image from memory, so the network is not the bottleneck: this measures
// decompression and writing. Targets are files in $BENCH_DIR (default the
// system temp dir).
package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/metalhall/metalhall/agent"
	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/images/imagefmt"
)

const imageSize = 512 << 20

type image struct {
	raw, zst []byte
	sha      string
	blockMap []wire.Range
}

// makeImage builds an image of compressible data (bytes from a skewed
// distribution: zstd gets ~2-3x, like binaries and filesystems). With
// dataFraction 0.5, alternate 8 MiB regions are zero, like the unused
// space of a freshly built disk image.
func makeImage(dataFraction float64) *image {
	raw := make([]byte, imageSize)
	rng := rand.New(rand.NewPCG(7, 8))
	const region = 8 << 20
	var m []wire.Range
	for off := 0; off < imageSize; off += region {
		if dataFraction < 1 && (off/region)%2 == 1 {
			continue
		}
		for i := off; i < off+region; i++ {
			v := rng.Uint32()
			raw[i] = byte(v&0x0f) * byte(v>>30) // a quarter zero-ish, rest low entropy
		}
		m = append(m, wire.Range{Offset: int64(off), Length: region})
	}
	var z bytes.Buffer
	w, _ := zstd.NewWriter(&z, zstd.WithEncoderLevel(zstd.SpeedDefault))
	w.Write(raw)
	w.Close()
	s := sha256.Sum256(raw)
	return &image{raw: raw, zst: z.Bytes(), sha: hex.EncodeToString(s[:]), blockMap: m}
}

var (
	imagesOnce sync.Once
	images     map[string]*image
)

func setup() {
	imagesOnce.Do(func() {
		images = map[string]*image{"dense": makeImage(1), "half-empty": makeImage(0.5)}
	})
}

func benchDir(b *testing.B) string {
	d := os.Getenv("BENCH_DIR")
	if d == "" {
		d = os.TempDir()
	}
	dir, err := os.MkdirTemp(d, "agent-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func serve(b *testing.B, body []byte) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "img.zst", time.Unix(0, 0), bytes.NewReader(body))
	}))
	b.Cleanup(srv.Close)
	return srv.URL + "/img.zst"
}

func BenchmarkWrite(b *testing.B) {
	setup()
	for _, name := range []string{"dense", "half-empty"} {
		img := images[name]
		b.Run(name+"/agent", func(b *testing.B) {
			url, dir := serve(b, img.zst), benchDir(b)
			target := filepath.Join(dir, "disk")
			b.SetBytes(imageSize)
			var res agent.WriteResult
			for b.Loop() {
				var err error
				res, err = agent.WriteImage(context.Background(), agent.WriteOptions{
					Image:  wire.ImageSpec{URL: url, Format: string(imagefmt.Zstd), SHA256: img.sha, UncompressedSize: imageSize, BlockMap: img.blockMap},
					Target: target,
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(res.Written)/(1<<20), "MiB-written/op")
		})
		b.Run(name+"/curl-zstd-dd", func(b *testing.B) {
			for _, tool := range []string{"curl", "zstd", "dd", "sha256sum"} {
				if _, err := exec.LookPath(tool); err != nil {
					b.Skipf("%s not installed", tool)
				}
			}
			url, dir := serve(b, img.zst), benchDir(b)
			target := filepath.Join(dir, "disk")
			script := fmt.Sprintf("curl -sf %s | zstd -dc | dd of=%s bs=4M iflag=fullblock conv=fsync status=none && sha256sum %s", url, target, target)
			b.SetBytes(imageSize)
			for b.Loop() {
				out, err := exec.Command("sh", "-c", script).CombinedOutput()
				if err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				if !strings.HasPrefix(string(out), img.sha) {
					b.Fatalf("sha256 mismatch: %s", out)
				}
			}
			b.ReportMetric(imageSize/(1<<20), "MiB-written/op")
		})
	}
}
