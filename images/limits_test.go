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
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

// zstdBomb is a real decompression bomb, made the way the strongest ones
// are: one zstd frame of RLE blocks, each 4 bytes that decode to 128 KiB
// of zeros (the format's largest block). 512 KiB of it decode to 16 GiB,
// the ratio of the upload in the security review.
func zstdBomb(t *testing.T, gib int) []byte {
	t.Helper()
	const block = 128 << 10
	n := gib << 30 / block
	b := make([]byte, 0, 6+4*n)
	// Magic; frame header descriptor 0 (no content size, not single
	// segment, no checksum); window descriptor 2^17 = one block.
	b = append(b, 0x28, 0xb5, 0x2f, 0xfd, 0x00, (17-10)<<3)
	for i := range n {
		h := uint32(block)<<3 | 1<<1 // RLE block of 128 KiB
		if i == n-1 {
			h |= 1 // last block
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0x00)
	}
	return b
}

// The finding: a 512 KiB zstd upload kept the service decoding for 20 s
// after its client had gone, and was then committed. Here the client
// sends a whole bomb (192 GiB of zeros in 6 MiB, which the import's
// pipeline takes in before decoding much of it) and goes away once the
// service has every byte: the import fails with the request's
// cancellation, and nothing is stored. Decoding it all takes minutes here;
// the guard below is far shorter, so an import that does not stop fails.
func TestBombUploadStopsAndCommitsNothingWhenTheClientGoes(t *testing.T) {
	fx := newFixture(t, Options{MaxImageSize: 1 << 40})
	bomb := zstdBomb(t, 192)
	received := make(chan struct{})
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := fx.s.Import(r.Context(), &eofSignal{r: r.Body, ch: received}, ImportOptions{Name: "bomb"})
		done <- err
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(bomb))
	if _, err := conn.Write(bomb); err != nil {
		t.Fatal(err)
	}
	<-received // every byte is in: the service is decoding
	conn.Close()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("import after the client left: %v, want the request's cancellation", err)
		}
	case <-time.After(time.Minute): // a deadlock guard, not a measurement
		t.Fatal("the import is still decoding the bomb after its client left")
	}
	fx.wantFiles(t)
	fx.wantNoImages(t)
}

// eofSignal closes ch when r reaches its end.
type eofSignal struct {
	r    io.Reader
	ch   chan struct{}
	once sync.Once
}

func (e *eofSignal) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.once.Do(func() { close(e.ch) })
	}
	return n, err
}

func TestBombStopsAtTheUncompressedSizeCap(t *testing.T) {
	fx := newFixture(t, Options{MaxImageSize: 64 << 20})
	_, err := fx.s.Import(ctx, bytes.NewReader(zstdBomb(t, 1)), ImportOptions{Name: "bomb"})
	var tl *TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || !errors.Is(err, inventory.ErrInvalid) || tl.Limit != 64<<20 {
		t.Fatalf("err = %v, want a TooLargeError at 64 MiB", err)
	}
	if !strings.Contains(err.Error(), "image size limit") {
		t.Errorf("the message does not say which setting: %v", err)
	}
	fx.wantFiles(t)
	fx.wantNoImages(t)

	// A raw image past the cap too.
	_, err = fx.s.Import(ctx, io.LimitReader(randomReader{}, 65<<20), ImportOptions{Name: "raw"})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("raw past the cap: %v", err)
	}
	fx.wantFiles(t)
	fx.wantNoImages(t)
}

// randomReader gives incompressible, non-zero bytes.
type randomReader struct{}

func (randomReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i*7+13) | 1
	}
	return len(p), nil
}

// A qcow2 image made by qemu-img, uploaded as it is and inside a zstd
// stream: refused with a message that names it and says how to convert.
func TestQcow2IsRefusedRawAndCompressed(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed (Debian: apt install qemu-utils; make test installs it)")
	}
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", p, "1G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	qcow := readFile(t, p)
	fx := newFixture(t, Options{})
	for name, data := range map[string][]byte{"as is": qcow, "in zstd": compress(t, imagefmt.Zstd, qcow)} {
		_, err := fx.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "q"})
		var ce *imagefmt.ContainerError
		if !errors.As(err, &ce) || ce.Found != "qcow2" || !errors.Is(err, ErrFormat) || !errors.Is(err, inventory.ErrInvalid) {
			t.Fatalf("%s: %v, want a qcow2 ContainerError", name, err)
		}
		if !strings.Contains(err.Error(), "qemu-img convert -O raw") {
			t.Errorf("%s: the message does not say what to do: %v", name, err)
		}
		fx.wantFiles(t)
		fx.wantNoImages(t)
	}
}

// gatedReader blocks its reads until released, saying when the first one
// arrived.
type gatedReader struct {
	started chan struct{}
	once    sync.Once
	pr      *io.PipeReader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	g.once.Do(func() { close(g.started) })
	return g.pr.Read(p)
}

func newGated() (*gatedReader, *io.PipeWriter) {
	pr, pw := io.Pipe()
	return &gatedReader{started: make(chan struct{}), pr: pr}, pw
}

func TestImportsPastTheConcurrencyCapAreRefused(t *testing.T) {
	fx := newFixture(t, Options{MaxImports: 1})
	g, pw := newGated()
	first := make(chan error, 1)
	go func() {
		_, err := fx.s.Import(ctx, g, ImportOptions{Name: "slow"})
		first <- err
	}()
	<-g.started
	_, err := fx.s.Import(ctx, strings.NewReader("image"), ImportOptions{Name: "second"})
	if !errors.Is(err, ErrBusy) || !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("second import while one runs: %v, want ErrBusy", err)
	}
	pw.CloseWithError(errors.New("client gone"))
	if err := <-first; err == nil {
		t.Fatal("the cut-off import succeeded")
	}
	if _, err := fx.s.Import(ctx, strings.NewReader("image"), ImportOptions{Name: "second"}); err != nil {
		t.Fatalf("after the first finished: %v", err)
	}
}

func TestTenantQuotaCountsStoredAndInFlightBytes(t *testing.T) {
	const MiB = 1 << 20
	fx := newFixture(t, Options{TenantQuota: 3 * MiB, MaxImports: 4})
	for _, n := range []string{"bank", "telco"} {
		if _, err := fx.inv.CreateTenant(ctx, inventory.Tenant{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	img := func(seed byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*31) ^ seed | 1
		}
		return b
	}
	a, err := fx.s.Import(ctx, bytes.NewReader(img(1, 2*MiB)), ImportOptions{Name: "a", Tenant: "bank"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = fx.s.Import(ctx, bytes.NewReader(img(2, 2*MiB)), ImportOptions{Name: "b", Tenant: "bank"})
	var qe *QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, ErrQuota) || qe.Tenant != "bank" || qe.Quota != 3*MiB {
		t.Fatalf("past the quota: %v", err)
	}
	fx.wantFiles(t, a.SHA256)
	// Another tenant and the staff have their own room.
	if _, err := fx.s.Import(ctx, bytes.NewReader(img(3, 2*MiB)), ImportOptions{Name: "c", Tenant: "telco"}); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.s.Import(ctx, bytes.NewReader(img(4, 4*MiB)), ImportOptions{Name: "d"}); err != nil {
		t.Fatal(err)
	}

	// In flight: telco has 2 MiB stored; an upload holding 1 MiB leaves no
	// room for a second one of 1 MiB + 1.
	g, pw := newGated()
	first := make(chan error, 1)
	go func() {
		_, err := fx.s.Import(ctx, g, ImportOptions{Name: "e", Tenant: "telco"})
		first <- err
	}()
	go pw.Write(img(5, MiB)) // one full chunk, then the upload stalls
	for {
		fx.s.mu.Lock()
		n := fx.s.inflight["telco"]
		fx.s.mu.Unlock()
		if n >= MiB {
			break
		}
		runtime.Gosched()
	}
	_, err = fx.s.Import(ctx, bytes.NewReader(img(6, MiB+1)), ImportOptions{Name: "f", Tenant: "telco"})
	if !errors.Is(err, ErrQuota) {
		t.Fatalf("second upload while the first holds the room: %v", err)
	}
	pw.CloseWithError(errors.New("client gone"))
	<-first
	fx.s.mu.Lock()
	left := fx.s.inflight["telco"]
	fx.s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d bytes still counted in flight after both imports ended", left)
	}
}

// The crafted pattern of the security review (alternating data and zero
// blocks) imports with a block map of at most MaxExtents.
func TestCraftedImageGetsABoundedBlockMap(t *testing.T) {
	const bs = 4096
	fx := newFixture(t, Options{BlockSize: bs})
	var b bytes.Buffer
	for i := range 2 * 32768 {
		if i%2 == 0 {
			b.Write(bytes.Repeat([]byte{0xa5}, bs))
		} else {
			b.Write(make([]byte, bs))
		}
	}
	rec, err := fx.s.Import(ctx, bytes.NewReader(compress(t, imagefmt.Zstd, b.Bytes())), ImportOptions{Name: "crafted"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := fx.s.BlockMap(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Extents) > imagefmt.MaxExtents {
		t.Fatalf("%d extents", len(m.Extents))
	}
	p, _ := fx.s.BlobPath(rec.SHA256)
	if st, err := os.Stat(blockMapPath(p)); err != nil || st.Size() > 64<<10 {
		t.Fatalf("block map file: %v, %v", st, err)
	}
}
