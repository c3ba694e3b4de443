package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

func TestImportFormats(t *testing.T) {
	raw := diskImage(1<<20+imagefmt.BlockSize+12345, 1) // several chunks and a partial last block
	rawSum := sum(raw)
	zm := imagefmt.NewMapper(imagefmt.BlockSize)
	zm.Write(raw)
	wantMap := zm.Finish(rawSum)
	for _, f := range imagefmt.Formats {
		t.Run(string(f), func(t *testing.T) {
			fx := newFixture(t, Options{})
			blob := compress(t, f, raw)
			for i, want := range []string{sum(blob), strings.ToUpper(rawSum), ""} {
				name := fmt.Sprintf("img-%d", i)
				img, err := fx.s.Import(ctx, bytes.NewReader(blob), ImportOptions{Name: name, SHA256: want, Format: string(f)})
				if err != nil {
					t.Fatalf("import with expected sha %q: %v", want, err)
				}
				if img.Format != string(f) || img.SHA256 != sum(blob) || img.Size != int64(len(blob)) ||
					img.UncompressedSHA256 != rawSum || img.UncompressedSize != int64(len(raw)) ||
					img.MappedBytes != wantMap.MappedBytes || img.BlockMapRef == "" || img.CreatedAt.IsZero() {
					t.Fatalf("image = %+v", img)
				}
				got, err := fx.inv.Image(ctx, name)
				if err != nil || *got != *img {
					t.Fatalf("catalogue has %+v, %v; want %+v", got, err, img)
				}
			}
			p, _ := fx.s.BlobPath(sum(blob))
			if !bytes.Equal(readFile(t, p), blob) {
				t.Fatal("stored blob differs from the input")
			}
			if _, err := os.Stat(filepath.Join(fx.dir, "blobs", filepath.FromSlash(mustImage(t, fx, "img-0").BlockMapRef))); err != nil {
				t.Fatalf("BlockMapRef: %v", err)
			}
			m, err := fx.s.BlockMap(ctx, mustImage(t, fx, "img-0"))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(m) != fmt.Sprint(wantMap) {
				t.Fatalf("block map = %+v, want %+v", m, wantMap)
			}
			fx.wantFiles(t, sum(blob)) // three names, one blob
		})
	}
}

func mustImage(t *testing.T, fx *fixture, name string) *inventory.Image {
	t.Helper()
	img, err := fx.inv.Image(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestImportChecksumMismatch(t *testing.T) {
	raw := diskImage(2<<20, 2)
	wrong := sum([]byte("something else"))
	for _, f := range imagefmt.Formats {
		t.Run(string(f), func(t *testing.T) {
			fx := newFixture(t, Options{})
			blob := compress(t, f, raw)
			_, err := fx.s.Import(ctx, bytes.NewReader(blob), ImportOptions{Name: "img", SHA256: wrong})
			if !errors.Is(err, ErrChecksum) || !errors.Is(err, inventory.ErrInvalid) {
				t.Fatalf("err = %v, want a checksum mismatch", err)
			}
			for _, v := range []string{wrong, sum(blob), `image "img"`} {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("error %q does not say %s", err, v)
				}
			}
			if f != imagefmt.Raw && !strings.Contains(err.Error(), sum(raw)) {
				t.Errorf("error %q does not give the uncompressed sha256", err)
			}
			fx.wantFiles(t)
			fx.wantNoImages(t)
		})
	}
}

func TestImportBadInput(t *testing.T) {
	raw := diskImage(1<<20, 3)
	gz := compress(t, imagefmt.Gzip, raw)
	zst := compress(t, imagefmt.Zstd, raw)
	cases := []struct {
		name string
		data []byte
		opts ImportOptions
		is   error
	}{
		{"declared zst, is gzip", gz, ImportOptions{Format: "raw.zst"}, ErrFormat},
		{"declared raw, is zstd", zst, ImportOptions{Format: "raw"}, ErrFormat},
		{"declared gz, is raw", raw, ImportOptions{Format: "raw.gz"}, ErrFormat},
		{"unknown format", raw, ImportOptions{Format: "qcow2"}, ErrFormat},
		{"truncated zstd", zst[:len(zst)/2], ImportOptions{}, ErrFormat},
		{"truncated gzip", gz[:len(gz)-9], ImportOptions{}, ErrFormat},
		{"gzip with trailing garbage", append(append([]byte{}, gz...), bytes.Repeat([]byte{7}, 100)...), ImportOptions{}, ErrFormat},
		{"zstd with trailing garbage", append(append([]byte{}, zst...), bytes.Repeat([]byte{7}, 3<<20)...), ImportOptions{}, ErrFormat},
		{"xz magic, garbage", append([]byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, bytes.Repeat([]byte{1}, 5000)...), ImportOptions{}, ErrFormat},
		{"empty", nil, ImportOptions{}, inventory.ErrInvalid},
		{"bad sha", raw, ImportOptions{SHA256: "abc"}, inventory.ErrInvalid},
		{"bad name", raw, ImportOptions{Name: "../x"}, inventory.ErrInvalid},
		{"no tenant", raw, ImportOptions{Tenant: "nobody"}, inventory.ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := newFixture(t, Options{})
			if c.opts.Name == "" {
				c.opts.Name = "img"
			}
			_, err := fx.s.Import(ctx, bytes.NewReader(c.data), c.opts)
			if !errors.Is(err, c.is) {
				t.Fatalf("err = %v, want %v", err, c.is)
			}
			if errors.Is(c.is, ErrFormat) && !errors.Is(err, inventory.ErrInvalid) {
				t.Fatalf("format error %v does not map to ErrInvalid", err)
			}
			fx.wantFiles(t)
			fx.wantNoImages(t)
		})
	}
}

func TestImportTinyRaw(t *testing.T) {
	fx := newFixture(t, Options{})
	img, err := fx.s.Import(ctx, strings.NewReader("hi"), ImportOptions{Name: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Format != "raw" || img.Size != 2 || img.MappedBytes != 2 {
		t.Fatalf("image = %+v", img)
	}
}

func TestImportExistsAndTenant(t *testing.T) {
	fx := newFixture(t, Options{})
	if _, err := fx.inv.CreateTenant(ctx, inventory.Tenant{Name: "bank"}); err != nil {
		t.Fatal(err)
	}
	img, err := fx.s.Import(ctx, strings.NewReader("image one"), ImportOptions{Name: "a", Tenant: "bank"})
	if err != nil || img.Tenant != "bank" {
		t.Fatalf("import: %+v, %v", img, err)
	}
	_, err = fx.s.Import(ctx, strings.NewReader("image two"), ImportOptions{Name: "a", Tenant: "bank"})
	if !errors.Is(err, inventory.ErrExists) {
		t.Fatalf("second import under the same name by the same tenant: %v, want ErrExists", err)
	}
	fx.wantFiles(t, img.SHA256)
	// Shared images have their own namespace: the tenant's name does not
	// take it from the operator.
	shared, err := fx.s.Import(ctx, strings.NewReader("image two"), ImportOptions{Name: "a"})
	if err != nil || shared.Tenant != "" {
		t.Fatalf("shared import under a tenant's name: %+v, %v", shared, err)
	}
	fx.wantFiles(t, img.SHA256, shared.SHA256)
}

// failingReader returns data, then an error.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestImportInterrupted(t *testing.T) {
	raw := diskImage(8<<20, 4)
	zst := compress(t, imagefmt.Zstd, raw)
	boom := errors.New("connection reset")
	for _, data := range [][]byte{raw, zst} {
		fx := newFixture(t, Options{})
		_, err := fx.s.Import(ctx, &failingReader{r: bytes.NewReader(data[:len(data)/2]), err: boom}, ImportOptions{Name: "img"})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
		fx.wantFiles(t)
		fx.wantNoImages(t)

		// Cancelled half way.
		cctx, cancel := context.WithCancel(ctx)
		r := &cancelAfter{r: bytes.NewReader(data), n: len(data) / 2, cancel: cancel}
		_, err = fx.s.Import(cctx, r, ImportOptions{Name: "img"})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		fx.wantFiles(t)
		fx.wantNoImages(t)
		// The name is free again.
		if _, err := fx.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "img"}); err != nil {
			t.Fatal(err)
		}
	}
}

type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// An upload over HTTP whose client goes away half way leaves nothing.
func TestImportHTTPClientDisconnect(t *testing.T) {
	fx := newFixture(t, Options{})
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := fx.s.Import(r.Context(), r.Body, ImportOptions{Name: "img"})
		done <- err
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 100<<20)
	conn.Write(diskImage(5<<20, 5))
	conn.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("import of a cut-off upload succeeded")
		}
		t.Logf("import failed as it should: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("import still running 20s after the client went away")
	}
	fx.wantFiles(t)
	fx.wantNoImages(t)
}

func TestImportURL(t *testing.T) {
	raw := diskImage(1<<20, 6)
	xzd := compress(t, imagefmt.XZ, raw)
	stall := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/img.raw.xz":
			w.Write(xzd)
		case "/stall":
			w.Header().Set("Content-Length", "10000000")
			w.Write(raw[:1<<20])
			w.(http.Flusher).Flush()
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	defer close(stall)
	// The test server is on loopback, which only an explicit allow opens.
	fx := newFixture(t, Options{StallTimeout: 300 * time.Millisecond, URLPolicy: mustPolicy(t, "127.0.0.1")})

	img, err := fx.s.ImportURL(ctx, srv.URL+"/img.raw.xz", ImportOptions{Name: "xz", SHA256: sum(xzd), Format: "raw.xz"})
	if err != nil {
		t.Fatal(err)
	}
	if img.UncompressedSHA256 != sum(raw) || img.Format != "raw.xz" {
		t.Fatalf("image = %+v", img)
	}
	if _, err := fx.s.ImportURL(ctx, srv.URL+"/missing", ImportOptions{Name: "m"}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404: err = %v", err)
	}
	if _, err := fx.s.ImportURL(ctx, "file:///etc/passwd", ImportOptions{Name: "f"}); !errors.Is(err, inventory.ErrInvalid) {
		t.Fatalf("file URL: err = %v", err)
	}
	// The stall detector ends it, not the test's context: only the
	// detector says "no data for".
	_, err = fx.s.ImportURL(ctx, srv.URL+"/stall", ImportOptions{Name: "stalled"})
	if err == nil || !strings.Contains(err.Error(), "no data for") {
		t.Fatalf("stalled download: err = %v", err)
	}
	fx.wantFiles(t, img.SHA256)
}

func TestConcurrentImportsAndServes(t *testing.T) {
	fx := newFixture(t, Options{MaxImports: 8})
	h := fx.s.BlobHandler(HandlerOptions{Authorize: AllowAll})
	srv := httptest.NewServer(h)
	defer srv.Close()
	contents := [][]byte{diskImage(2<<20, 10), compress(t, imagefmt.Zstd, diskImage(2<<20, 11))}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := contents[i%2]
			img, err := fx.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: fmt.Sprintf("img-%d", i)})
			if err != nil {
				errs <- err
				return
			}
			for range 3 {
				resp, err := http.Get(srv.URL + "/images/" + img.SHA256)
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("served %d bytes (%v), want the %d imported", len(got), err, len(data))
					return
				}
			}
		}()
	}
	// A GC running alongside must not take blobs from under imports.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 5 {
			if _, err := fx.s.GC(ctx); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fx.wantFiles(t, sum(contents[0]), sum(contents[1]))
}

func TestOpenRemovesStaleTemps(t *testing.T) {
	fx := newFixture(t, Options{})
	stale := filepath.Join(fx.dir, "blobs", "tmp", "import-dead.part")
	if err := os.WriteFile(stale, []byte("half an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(fx.dir, fx.inv, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temp file still there: %v", err)
	}
}

// A declared format the first bytes contradict is refused before the rest
// of the stream is read.
func TestImportFormatMismatchFailsFast(t *testing.T) {
	fx := newFixture(t, Options{})
	gz := compress(t, imagefmt.Gzip, diskImage(4<<20, 7))
	r := &failingReader{r: bytes.NewReader(gz[:chunkSize+10]), err: errors.New("read past the first chunk")}
	_, err := fx.s.Import(ctx, r, ImportOptions{Name: "img", Format: "raw.zst"})
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Declared != imagefmt.Zstd || fe.Detected != imagefmt.Gzip {
		t.Fatalf("err = %v, want a format error (declared raw.zst, is raw.gz)", err)
	}
	if !strings.Contains(err.Error(), "declared format raw.zst, but the content is raw.gz") {
		t.Errorf("message: %v", err)
	}
	fx.wantFiles(t)
}

func TestTenantsImportTheSameNameAndBytesIntoOneBlob(t *testing.T) {
	fx := newFixture(t, Options{})
	for _, tn := range []string{"ta", "tb"} {
		if _, err := fx.inv.CreateTenant(ctx, inventory.Tenant{Name: tn}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := fx.s.Import(ctx, strings.NewReader("the same image"), ImportOptions{Name: "golden", Tenant: "ta"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := fx.s.Import(ctx, strings.NewReader("the same image"), ImportOptions{Name: "golden", Tenant: "tb"})
	if err != nil || b.Tenant != "tb" || b.SHA256 != a.SHA256 {
		t.Fatalf("tenant B imports tenant A's name and bytes: %+v, %v", b, err)
	}
	fx.wantFiles(t, a.SHA256)
	if err := fx.s.Delete(ctx, a.Ref()); err != nil {
		t.Fatal(err)
	}
	fx.wantFiles(t, b.SHA256) // still tenant B's
	if err := fx.s.Delete(ctx, b.Ref()); err != nil {
		t.Fatal(err)
	}
	fx.wantFiles(t)
}
