package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/images/imagefmt"
)

const MiB = 1 << 20

// testImage is 16 MiB: data, a 6 MiB hole, data, a hole to the end — like
// a freshly built disk image with unused filesystem space.
func testImage(t *testing.T) ([]byte, []wire.Range) {
	t.Helper()
	img := make([]byte, 16*MiB)
	rng := rand.New(rand.NewPCG(1, 2))
	data := []wire.Range{{Offset: 0, Length: 2 * MiB}, {Offset: 8 * MiB, Length: MiB + 4096}}
	for _, r := range data {
		for i := r.Offset; i < r.Offset+r.Length; i += 8 {
			v := rng.Uint64()
			for j := int64(0); j < 8; j++ {
				img[i+j] = byte(v >> (8 * j))
			}
		}
	}
	return img, data
}

var compressed sync.Map // format+sha256 -> []byte; xz in pure Go is slow under -race

func compress(t *testing.T, f imagefmt.Format, b []byte) []byte {
	t.Helper()
	key := string(f) + sum(b)
	if c, ok := compressed.Load(key); ok {
		return c.([]byte)
	}
	c := compressUncached(t, f, b)
	compressed.Store(key, c)
	return c
}

func compressUncached(t *testing.T, f imagefmt.Format, b []byte) []byte {
	var out bytes.Buffer
	switch f {
	case imagefmt.Raw:
		return b
	case imagefmt.Gzip:
		z := gzip.NewWriter(&out)
		z.Write(b)
		z.Close()
	case imagefmt.Zstd:
		z, _ := zstd.NewWriter(&out)
		z.Write(b)
		z.Close()
	case imagefmt.XZ:
		// Prefer the real xz tool: it is what images are made with, and
		// the pure-Go encoder takes ~10 s for 16 MiB under -race.
		if path, err := exec.LookPath("xz"); err == nil {
			cmd := exec.Command(path, "-c", "-1")
			cmd.Stdin = bytes.NewReader(b)
			cmd.Stdout = &out
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			return out.Bytes()
		}
		z, err := xz.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		z.Write(b)
		z.Close()
	}
	return out.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// serve serves body with Range support (http.ServeContent) and counts
// the requests and the Range headers it saw.
type imageServer struct {
	*httptest.Server
	body     []byte
	requests atomic.Int32
	mu       sync.Mutex
	ranges   []string
	// cutOnce, when set, makes the first request send only that many
	// bytes of the body and then drop the connection.
	cutOnce int
	cut     atomic.Bool
}

func newImageServer(t *testing.T, body []byte) *imageServer {
	s := &imageServer{body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		if s.cutOnce > 0 && !s.cut.Swap(true) {
			// Promise the whole body, send part of it, hang up.
			hj := w.(http.Hijacker)
			conn, buf, err := hj.Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nETag: \"v1\"\r\n")
			buf.WriteString("Content-Length: " + itoa(len(s.body)) + "\r\n\r\n")
			buf.Write(s.body[:s.cutOnce])
			buf.Flush()
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "image", time.Unix(0, 0), bytes.NewReader(s.body))
	}))
	t.Cleanup(s.Close)
	return s
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func writeOpts(url, target string, img []byte, f imagefmt.Format, m []wire.Range) WriteOptions {
	return WriteOptions{
		Image:  wire.ImageSpec{URL: url, Format: string(f), SHA256: sum(img), UncompressedSize: int64(len(img)), BlockMap: m},
		Target: target,
		Fetch:  FetchOptions{Header: http.Header{"Authorization": {"Bearer tok"}}, Backoff: time.Millisecond, Retries: 3},
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestWriteImageFormats(t *testing.T) {
	img, data := testImage(t)
	for _, f := range []imagefmt.Format{imagefmt.Raw, imagefmt.Gzip, imagefmt.Zstd, imagefmt.XZ} {
		for _, withMap := range []bool{true, false} {
			name := string(f) + map[bool]string{true: "-map", false: "-scan"}[withMap]
			t.Run(name, func(t *testing.T) {
				srv := newImageServer(t, compress(t, f, img))
				target := filepath.Join(t.TempDir(), "disk")
				// Old data on the "disk" must not survive in the holes.
				if err := os.WriteFile(target, bytes.Repeat([]byte{0xAA}, 8*MiB), 0o644); err != nil {
					t.Fatal(err)
				}
				var m []wire.Range
				if withMap {
					m = data
				}
				o := writeOpts(srv.URL+"/img", target, img, f, m)
				var last wire.Progress
				var reports int
				o.ProgressEvery = time.Nanosecond
				o.Progress = func(p wire.Progress) { last = p; reports++ }
				res, err := WriteImage(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(target)
				if !bytes.Equal(got, img) {
					t.Fatal("target content differs from the image")
				}
				mapped := int64(3*MiB + 4096)
				if withMap && res.Written != mapped {
					t.Errorf("written %d bytes, want exactly the mapped %d", res.Written, mapped)
				}
				// The scan works in 64 KiB blocks: the partial block after
				// the second data range is written whole.
				if !withMap && res.Written != mapped-4096+zeroBlock {
					t.Errorf("written %d bytes, want %d", res.Written, mapped-4096+zeroBlock)
				}
				if res.Written+res.Skipped != int64(len(img)) {
					t.Errorf("written %d + skipped %d != %d", res.Written, res.Skipped, len(img))
				}
				if a := allocated(t, target); a > 4*MiB {
					t.Errorf("target has %d bytes allocated, want a sparse file (<= 4 MiB)", a)
				}
				if res.SHA256 != sum(img) {
					t.Errorf("sha256 %s", res.SHA256)
				}
				if reports < 2 || last.Step != wire.StepVerify || last.Bytes != int64(len(img)) || last.Total != int64(len(img)) {
					t.Errorf("last progress %+v after %d reports", last, reports)
				}
			})
		}
	}
}

func TestWriteImageCorruptStream(t *testing.T) {
	img, data := testImage(t)
	bad := bytes.Clone(img)
	bad[100] ^= 0xFF
	srv := newImageServer(t, bad)
	_, err := WriteImage(context.Background(), writeOpts(srv.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw, data))
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "downloaded data has sha256") {
		t.Fatalf("err = %v, want a downloaded-data checksum error", err)
	}
	t.Log(err)

	// A corrupt compressed stream fails in the decompressor.
	gz := compress(t, imagefmt.Gzip, img)
	gz[len(gz)/2] ^= 0xFF
	srv2 := newImageServer(t, gz)
	_, err = WriteImage(context.Background(), writeOpts(srv2.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Gzip, data))
	if err == nil {
		t.Fatal("no error for a corrupt gzip stream")
	}
	t.Log(err)
}

// A block map that hides data: the stream hash matches but what is on
// disk does not, and the read-back verification must say so.
func TestWriteImageReadBackMismatch(t *testing.T) {
	img, _ := testImage(t)
	srv := newImageServer(t, img)
	_, err := WriteImage(context.Background(), writeOpts(srv.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw,
		[]wire.Range{{Offset: 0, Length: MiB}}))
	if !errors.Is(err, ErrChecksum) || !errors.Is(err, ErrDiskMismatch) {
		t.Fatalf("err = %v, want a read-back checksum error", err)
	}
}

func TestWriteImageResume(t *testing.T) {
	img, data := testImage(t)
	body := compress(t, imagefmt.Zstd, img)
	srv := newImageServer(t, body)
	srv.cutOnce = len(body) / 3
	target := filepath.Join(t.TempDir(), "disk")
	res, err := WriteImage(context.Background(), writeOpts(srv.URL, target, img, imagefmt.Zstd, data))
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumes != 1 || srv.requests.Load() != 2 {
		t.Errorf("resumes %d, requests %d; want 1 and 2", res.Resumes, srv.requests.Load())
	}
	if want := "bytes=" + fmtInt(len(body)/3) + "-"; srv.ranges[1] != want {
		t.Errorf("second request Range %q, want %q", srv.ranges[1], want)
	}
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got, img) {
		t.Fatal("target differs after resume")
	}
}

func TestWriteImageGivesUp(t *testing.T) {
	img, _ := testImage(t)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		conn, buf, _ := w.(http.Hijacker).Hijack()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\nabc")
		buf.Flush()
		conn.Close()
	}))
	defer srv.Close()
	_, err := WriteImage(context.Background(), writeOpts(srv.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw, nil))
	if err == nil || !strings.Contains(err.Error(), "server ignored the Range request") {
		t.Fatalf("err = %v", err)
	}
}

func TestWriteImageHTTPError(t *testing.T) {
	img, _ := testImage(t)
	srv := newImageServer(t, img)
	o := writeOpts(srv.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw, nil)
	o.Fetch.Header = nil
	_, err := WriteImage(context.Background(), o)
	var hs *httpStatusError
	if !errors.As(err, &hs) || hs.Code != 401 {
		t.Fatalf("err = %v, want HTTP 401", err)
	}
}

func TestWriteImageStall(t *testing.T) {
	img, _ := testImage(t)
	release := make(chan struct{})
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Content-Length", fmtInt(len(img)))
			w.Write(img[:MiB])
			w.(http.Flusher).Flush()
			<-release // stall
			return
		}
		http.ServeContent(w, r, "x", time.Unix(0, 0), bytes.NewReader(img))
	}))
	defer srv.Close()
	defer close(release)
	o := writeOpts(srv.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw, nil)
	o.Fetch.Stall = 200 * time.Millisecond
	res, err := WriteImage(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumes != 1 {
		t.Errorf("resumes = %d", res.Resumes)
	}
}

// A disk that fails mid-write (a 2 MiB tmpfs: ENOSPC) must stop the
// download and return the write error, not hang or race.
func TestWriteImageDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: root only")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=2m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	img, _ := testImage(t)
	srv := newImageServer(t, compress(t, imagefmt.Zstd, img))
	_, err := WriteImage(context.Background(), writeOpts(srv.URL, filepath.Join(dir, "disk"), img, imagefmt.Zstd, nil))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	t.Log(err)
}

// The stream is not hashed on the way in: a good image is downloaded
// once. A corrupt one is found by the read-back and fetched a second
// time only to say that the image, not the disk, is at fault.
func TestWriteImageFetchesAgainOnlyToExplainAMismatch(t *testing.T) {
	img, data := testImage(t)
	good := newImageServer(t, img)
	if _, err := WriteImage(context.Background(), writeOpts(good.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw, data)); err != nil {
		t.Fatal(err)
	}
	if n := good.requests.Load(); n != 1 {
		t.Errorf("a good image took %d requests, want 1", n)
	}

	bad := bytes.Clone(img)
	bad[len(bad)-1] ^= 0xFF
	corrupt := newImageServer(t, bad)
	_, err := WriteImage(context.Background(), writeOpts(corrupt.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw, nil))
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "downloaded data has sha256 "+sum(bad)) || errors.Is(err, ErrDiskMismatch) {
		t.Fatalf("err = %v, want the downloaded data's sha256 named (and no read-back blame)", err)
	}
	if n := corrupt.requests.Load(); n != 2 {
		t.Errorf("a corrupt image took %d requests, want 2 (the write, the explanation)", n)
	}
}

// The read-back hashes exactly the image's bytes, whatever the size's
// alignment and however many chunks it spans, reading the target with
// O_DIRECT where the file system allows it and buffered where not; a
// target shorter than the image is an error, not a short hash.
func TestReadBackHashesTheImageBytesBothWays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk")
	data := make([]byte, 2*chunkSize+12345) // three chunks, the last not 4 KiB-aligned
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	// The target is larger than the image: the bytes past it are not hashed.
	if err := os.WriteFile(path, append(bytes.Clone(data), bytes.Repeat([]byte{0xAA}, 3*directAlign)...), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := int64(len(data))
	noProgress := newProgressTicker(nil, wire.StepVerify, size, time.Second)

	got, err := hashReads(context.Background(), f, false, size, noProgress)
	if err != nil || got != sum(data) {
		t.Errorf("buffered: %s, %v; want %s", got, err, sum(data))
	}
	if d, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0); err != nil {
		t.Logf("O_DIRECT not supported here (%v): the buffered path is what the agent uses on this file system", err)
	} else {
		got, err := hashReads(context.Background(), d, true, size, noProgress)
		d.Close()
		if err != nil || got != sum(data) {
			t.Errorf("O_DIRECT: %s, %v; want %s", got, err, sum(data))
		}
	}
	got, err = readBackSHA256(context.Background(), path, f, size, noProgress)
	if err != nil || got != sum(data) {
		t.Errorf("readBackSHA256: %s, %v; want %s", got, err, sum(data))
	}

	// Asked for more than the target holds.
	_, err = readBackSHA256(context.Background(), path, f, size+5*directAlign, noProgress)
	if err == nil || !strings.Contains(err.Error(), "target ends at") {
		t.Errorf("a target shorter than the image: err = %v, want 'target ends at'", err)
	}

	// A cancelled context stops the read-back (and its reader).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := readBackSHA256(ctx, path, f, size, noProgress); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

// When the second fetch, the one that explains a mismatch, fails too,
// the stream is blamed (no ErrDiskMismatch, so the task fails step write)
// and both causes are kept.
func TestWriteImageMismatchWhoseSecondFetchFailsBlamesTheStream(t *testing.T) {
	img, _ := testImage(t)
	bad := bytes.Clone(img)
	bad[len(bad)/2] ^= 0xFF
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) > 1 {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		http.ServeContent(w, r, "image", time.Unix(0, 0), bytes.NewReader(bad))
	}))
	t.Cleanup(srv.Close)
	_, err := WriteImage(context.Background(), writeOpts(srv.URL, filepath.Join(t.TempDir(), "disk"), img, imagefmt.Raw, nil))
	if !errors.Is(err, ErrChecksum) || errors.Is(err, ErrDiskMismatch) || !strings.Contains(err.Error(), "fetched again") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v, want a checksum error blaming the stream, with the second fetch's 404", err)
	}
}
