package images

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/metalhall/metalhall/images/imagefmt"
)

// waker is a Wake the test fires by hand (what the event feed does in the
// service).
type waker struct {
	mu sync.Mutex
	ch chan struct{}
}

func newWaker() *waker { return &waker{ch: make(chan struct{})} }

func (w *waker) wake() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

func (w *waker) kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.ch)
	w.ch = make(chan struct{})
}

// replicating runs f's replicator until the test ends; each comparison's
// count of missing blobs arrives on the channel returned, which is the
// test's gate: the replicator waits for the test to take each one.
func replicating(t *testing.T, f *fixture, o ReplicateOptions) <-chan int {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	passes := make(chan int)
	o.afterPass = func(missing int) {
		select {
		case passes <- missing:
		case <-rctx.Done():
		}
	}
	done := make(chan error, 1)
	go func() { done <- f.s.Replicate(rctx, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Replicate: %v", err)
		}
	})
	return passes
}

// untilPass takes comparisons until one reports want missing blobs,
// kicking w (when not nil) before each so that one follows soon. The
// test's own timeout is the only bound.
func untilPass(t *testing.T, passes <-chan int, w *waker, want int) {
	t.Helper()
	for {
		if w != nil {
			w.kick()
		}
		if got := <-passes; got == want {
			return
		}
	}
}

func TestBlobsReachAnInstanceBeforeAnyoneAsksAndOutliveTheirImporter(t *testing.T) {
	c := newPeerCluster(t)
	data := compress(t, imagefmt.Zstd, diskImage(2<<20, 7))
	a := c.instance(t, "a", nil)
	img, err := a.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "ubuntu"})
	if err != nil {
		t.Fatal(err)
	}
	var liarHits, aHits atomic.Int64
	// The liar is asked first and serves another well-formed image.
	wrong := liar(t, compress(t, imagefmt.Zstd, diskImage(2<<20, 8)), &liarHits)
	ha := a.s.BlobHandler(HandlerOptions{PeerKey: peerKey})
	srvA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		aHits.Add(1)
		ha.ServeHTTP(w, r)
	}))
	t.Cleanup(srvA.Close)
	b := c.instance(t, "b", []string{wrong, srvA.URL})
	if got := value(t, b.s.metrics.missing); got != 1 {
		t.Fatalf("blobs missing on b before replicating: %v, want 1", got)
	}

	w := newWaker()
	passes := replicating(t, b, ReplicateOptions{Wake: w.wake, MinGap: time.Nanosecond, Interval: time.Hour})
	untilPass(t, passes, nil, 0) // the first comparison starts the fetch; its end wakes the next
	b.wantFiles(t, img.SHA256)
	if liarHits.Load() != 1 || aHits.Load() != 1 {
		t.Fatalf("peers asked: liar %d, a %d; want each once", liarHits.Load(), aHits.Load())
	}
	if done, failed := value(t, b.s.metrics.fetchDone), value(t, b.s.metrics.fetchFailed); done != 1 || failed != 0 {
		t.Fatalf("fetches done %v, failed %v; want 1, 0", done, failed)
	}
	if got := value(t, b.s.metrics.missing); got != 0 {
		t.Fatalf("blobs missing on b after replicating: %v", got)
	}

	// a goes away; b serves the blob from its own copy and asks nobody.
	srvA.Close()
	rec := peerGet(t, b.s.BlobHandler(HandlerOptions{Authorize: AllowAll}), "/images/"+img.SHA256)
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), data) {
		t.Fatalf("blob from b with a gone: %d, %d bytes (want %d)", rec.Code, rec.Body.Len(), len(data))
	}
	if liarHits.Load() != 1 || aHits.Load() != 1 {
		t.Fatalf("b asked peers for a blob it holds: liar %d, a %d", liarHits.Load(), aHits.Load())
	}

	// Deleted from the catalogue (on a): b's next comparison removes its
	// copy, and later ones fetch nothing.
	if err := a.s.Delete(ctx, img.Ref()); err != nil {
		t.Fatal(err)
	}
	for len(b.files(t)) != 0 {
		w.kick()
		<-passes
	}
	w.kick()
	if got := <-passes; got != 0 {
		t.Fatalf("blobs missing after the delete: %d", got)
	}
	if liarHits.Load() != 1 || aHits.Load() != 1 || value(t, b.s.metrics.fetchDone) != 1 {
		t.Fatalf("a deleted image was fetched again: liar %d, a %d", liarHits.Load(), aHits.Load())
	}
}

func TestABlobNoPeerServesRightIsRejectedAndBacksOff(t *testing.T) {
	c := newPeerCluster(t)
	a := c.instance(t, "a", nil)
	if _, err := a.s.Import(ctx, bytes.NewReader(diskImage(1<<20, 9)), ImportOptions{Name: "debian"}); err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	wrong := liar(t, diskImage(1<<20, 10), &hits)
	b := c.instance(t, "b", []string{wrong})
	w := newWaker()
	passes := replicating(t, b, ReplicateOptions{Wake: w.wake, MinGap: time.Nanosecond, Interval: time.Hour, Backoff: time.Hour})
	// First comparison: missing, fetch started. Wait for the fetch to
	// fail (its end wakes a comparison too).
	for value(t, b.s.metrics.fetchFailed) == 0 {
		if got := <-passes; got != 1 {
			t.Fatalf("blobs missing: %d, want 1", got)
		}
	}
	b.wantFiles(t) // the wrong bytes were never published
	// Within the backoff, comparisons do not ask the liar again.
	for range 3 {
		w.kick()
		if got := <-passes; got != 1 {
			t.Fatalf("blobs missing: %d, want 1", got)
		}
	}
	if hits.Load() != 1 || value(t, b.s.metrics.fetchFailed) != 1 {
		t.Fatalf("liar asked %d times, %v failed fetches; want 1, 1", hits.Load(), value(t, b.s.metrics.fetchFailed))
	}
}

func TestReplicateWithoutPeersReturnsAtOnce(t *testing.T) {
	f := newFixture(t, Options{NoSync: true})
	if err := f.s.Replicate(ctx, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// value reads a counter's or a gauge's value as a scrape would.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if c := d.GetCounter(); c != nil {
		return c.GetValue()
	}
	return d.GetGauge().GetValue()
}

func TestGCDuringAFetchKeepsItsFileAndTheBlobItPlaces(t *testing.T) {
	c := newPeerCluster(t)
	data := compress(t, imagefmt.Gzip, diskImage(1<<20, 11))
	a := c.instance(t, "a", nil)
	img, err := a.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "rocky"})
	if err != nil {
		t.Fatal(err)
	}
	// a serves the first half, then waits for the test's GC to be done.
	half, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		close(half)
		<-release
		w.Write(data[len(data)/2:])
	}))
	t.Cleanup(srv.Close)
	b := c.instance(t, "b", []string{srv.URL})
	passes := replicating(t, b, ReplicateOptions{MinGap: time.Nanosecond, Interval: time.Hour})
	if got := <-passes; got != 1 {
		t.Fatalf("blobs missing: %d, want 1", got)
	}
	<-half
	// The fetch made its temp file once a answered; wait for it (a poll
	// the test's timeout bounds): GC must leave it alone.
	var tmps []string
	for len(tmps) == 0 {
		time.Sleep(time.Millisecond)
		if tmps, err = filepath.Glob(filepath.Join(b.s.tmpDir(), "*")); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := b.s.GC(ctx)
	if err != nil || rep.TempFiles != 0 || len(rep.Blobs) != 0 {
		t.Fatalf("GC during a fetch: %+v %v", rep, err)
	}
	if _, err := os.Stat(tmps[0]); err != nil {
		t.Fatalf("the fetch's temp file after GC: %v", err)
	}
	close(release)
	untilPass(t, passes, nil, 0)
	b.wantFiles(t, img.SHA256)
	// And a GC afterwards keeps the blob the catalogue names.
	if rep, err := b.s.GC(ctx); err != nil || len(rep.Blobs) != 0 {
		t.Fatalf("GC after the fetch: %+v %v", rep, err)
	}
	b.wantFiles(t, img.SHA256)
}
