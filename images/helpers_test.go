package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
	"github.com/ulikunitz/xz"
)

var ctx = context.Background()

type fixture struct {
	inv *inventory.Store
	s   *Store
	dir string
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	dir := t.TempDir()
	inv, err := inventory.Open(filepath.Join(dir, "metalhall.db"), inventory.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	s, err := Open(filepath.Join(dir, "images"), inv, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{inv: inv, s: s, dir: filepath.Join(dir, "images")}
}

// files lists the regular files under the blob store, relative to it.
func (f *fixture) files(t *testing.T) []string {
	t.Helper()
	var out []string
	root := filepath.Join(f.dir, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// wantFiles asserts the store holds exactly the blobs (with their maps) of
// these sha256s, and no temp files.
func (f *fixture) wantFiles(t *testing.T, shas ...string) {
	t.Helper()
	var want []string
	for _, s := range shas {
		want = append(want, filepath.Join("sha256", s[:2], s), filepath.Join("sha256", s[:2], s+".bmap.json"))
	}
	sort.Strings(want)
	got := f.files(t)
	if len(got) != len(want) {
		t.Fatalf("store holds %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("store holds %q, want %q", got, want)
		}
	}
}

func (f *fixture) wantNoImages(t *testing.T) {
	t.Helper()
	imgs, err := f.inv.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 0 {
		t.Fatalf("catalogue holds %d images, want none: %+v", len(imgs), imgs)
	}
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// diskImage makes a pseudo-random "disk image" of n bytes in which every
// third 64 KiB block is zero, so the zero map has something to find.
func diskImage(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < n; i += 8 {
		if (i/imagefmt.BlockSize)%3 == 1 {
			continue
		}
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func compress(t *testing.T, f imagefmt.Format, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch f {
	case imagefmt.Raw:
		return raw
	case imagefmt.Gzip:
		w := gzip.NewWriter(&buf)
		w.Write(raw)
		err = w.Close()
	case imagefmt.Zstd:
		w, _ := zstd.NewWriter(&buf)
		w.Write(raw)
		err = w.Close()
	case imagefmt.XZ:
		// The pure-Go encoder takes seconds per MiB under -race.
		if path, e := exec.LookPath("xz"); e == nil {
			cmd := exec.Command(path, "-0", "-c")
			cmd.Stdin = bytes.NewReader(raw)
			out, e := cmd.Output()
			if e != nil {
				t.Fatal(e)
			}
			return out
		}
		w, e := xz.NewWriter(&buf)
		if e != nil {
			t.Fatal(e)
		}
		w.Write(raw)
		err = w.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }
