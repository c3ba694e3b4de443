package images

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

var peerKey = []byte("0123456789abcdef0123456789abcdef")

// cluster is instances sharing one catalogue, each with a blob directory
// of its own: what several metalhall instances on one etcd look like to
// this package.
type peerCluster struct {
	inv *inventory.Store
	dir string
}

func newPeerCluster(t *testing.T) *peerCluster {
	t.Helper()
	dir := t.TempDir()
	inv, err := inventory.Open(filepath.Join(dir, "metalhall.db"), inventory.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	return &peerCluster{inv: inv, dir: dir}
}

// instance opens a store named name over the shared catalogue; peers (may
// be nil) are the URLs it fetches from.
func (c *peerCluster) instance(t *testing.T, name string, peers []string) *fixture {
	t.Helper()
	opts := Options{NoSync: true}
	if peers != nil {
		opts.Peers = &Peers{Key: peerKey, URLs: func(ctx context.Context) ([]string, error) { return peers, nil }}
	}
	s, err := Open(filepath.Join(c.dir, name), c.inv, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{inv: c.inv, s: s, dir: filepath.Join(c.dir, name)}
}

// serve is an instance's provisioning listener as far as blobs go: peers
// only (Authorize refuses everyone else), on loopback.
func serve(t *testing.T, f *fixture, hits *atomic.Int64) string {
	t.Helper()
	h := f.s.BlobHandler(HandlerOptions{PeerKey: peerKey})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// liar answers every blob request with these bytes.
func liar(t *testing.T, body []byte, hits *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func peerGet(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestBlobMissingHereIsFetchedFromAPeerWrongBytesRejected(t *testing.T) {
	c := newPeerCluster(t)
	raw := diskImage(3<<20, 1)
	data := compress(t, imagefmt.Zstd, raw)
	a := c.instance(t, "a", nil)
	img, err := a.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "ubuntu"})
	if err != nil {
		t.Fatal(err)
	}
	var liarHits, emptyHits, aHits atomic.Int64
	// The liar serves another image, well-formed: only the checksum can
	// tell. The empty peer lacks the blob too.
	wrong := liar(t, compress(t, imagefmt.Zstd, diskImage(3<<20, 2)), &liarHits)
	empty := serve(t, c.instance(t, "c", nil), &emptyHits)
	b := c.instance(t, "b", []string{wrong, empty, serve(t, a, &aHits)})

	h := b.s.BlobHandler(HandlerOptions{Authorize: AllowAll})
	rec := peerGet(t, h, "/images/"+img.SHA256)
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), data) {
		t.Fatalf("blob from b: %d, %d bytes (want %d)", rec.Code, rec.Body.Len(), len(data))
	}
	if liarHits.Load() != 1 || emptyHits.Load() != 1 || aHits.Load() != 1 {
		t.Fatalf("peers asked: liar %d, empty %d, a %d; want each once, in order", liarHits.Load(), emptyHits.Load(), aHits.Load())
	}
	b.wantFiles(t, img.SHA256)
	// The block map is made here from the bytes, and is a's.
	ma, err := a.s.BlockMap(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := b.s.BlockMap(ctx, img)
	if err != nil || !reflect.DeepEqual(ma, mb) {
		t.Fatalf("b's block map %+v (%v), a's %+v", mb, err, ma)
	}
	// Stored now: the next request asks nobody.
	if rec := peerGet(t, h, "/images/"+img.SHA256); rec.Code != http.StatusOK || aHits.Load() != 1 {
		t.Fatalf("second request: %d, a asked %d times", rec.Code, aHits.Load())
	}
}

func TestNoPeerHavingTheBlobIsAClearErrorAndLeavesNothing(t *testing.T) {
	c := newPeerCluster(t)
	data := compress(t, imagefmt.Gzip, diskImage(1<<20, 3))
	a := c.instance(t, "a", nil)
	img, err := a.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "ubuntu"})
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	wrong := liar(t, data[:len(data)/2], &hits) // cut short
	b := c.instance(t, "b", []string{wrong})
	_, err = b.s.BlockMap(ctx, img)
	var ue *BlobUnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrBlobUnavailable) || len(ue.Tried) != 1 || !strings.Contains(err.Error(), wrong) ||
		!strings.Contains(err.Error(), "import the image again") {
		t.Fatalf("no peer has it: %v", err)
	}
	b.wantFiles(t)
	rec := peerGet(t, b.s.BlobHandler(HandlerOptions{Authorize: AllowAll}), "/images/"+img.SHA256)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("blob request with no peer having it: %d %q", rec.Code, rec.Body.String())
	}
	// No live peer at all.
	lone := c.instance(t, "d", []string{})
	if _, err := lone.s.BlockMap(ctx, img); !errors.Is(err, ErrBlobUnavailable) || !strings.Contains(err.Error(), "no other instance is live") {
		t.Fatalf("no peers: %v", err)
	}
}

func TestPeerRequestsAreSignedForOneBlobAndNeverRelayed(t *testing.T) {
	c := newPeerCluster(t)
	a := c.instance(t, "a", nil)
	img, err := a.s.Import(ctx, bytes.NewReader(diskImage(1<<20, 4)), ImportOptions{Name: "ubuntu"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.s.Import(ctx, bytes.NewReader(diskImage(1<<20, 5)), ImportOptions{Name: "debian"})
	if err != nil {
		t.Fatal(err)
	}
	h := a.s.BlobHandler(HandlerOptions{PeerKey: peerKey})
	now := time.Now()
	for name, tc := range map[string]struct {
		auth string
		code int
	}{
		"signed":        {"Bearer " + peerToken(peerKey, img.SHA256, now.Add(time.Minute)), http.StatusOK},
		"no token":      {"", http.StatusForbidden},
		"another key":   {"Bearer " + peerToken([]byte("another key, 32 bytes long......"), img.SHA256, now.Add(time.Minute)), http.StatusForbidden},
		"another blob":  {"Bearer " + peerToken(peerKey, other.SHA256, now.Add(time.Minute)), http.StatusForbidden},
		"expired":       {"Bearer " + peerToken(peerKey, img.SHA256, now.Add(-time.Second)), http.StatusForbidden},
		"too far ahead": {"Bearer " + peerToken(peerKey, img.SHA256, now.Add(time.Hour)), http.StatusForbidden},
		"mangled":       {"Bearer mhpeer.x.y", http.StatusForbidden},
	} {
		rec := peerGet(t, h, "/images/"+img.SHA256, "Authorization", tc.auth)
		if rec.Code != tc.code {
			t.Errorf("%s: %d, want %d", name, rec.Code, tc.code)
		}
	}
	// b lacks the blob and has a as its peer; a peer asking b gets a 404
	// from b, which does not ask a in turn (no loops between instances).
	var aHits atomic.Int64
	b := c.instance(t, "b", []string{serve(t, a, &aHits)})
	hb := b.s.BlobHandler(HandlerOptions{PeerKey: peerKey})
	rec := peerGet(t, hb, "/images/"+img.SHA256, "Authorization", "Bearer "+peerToken(peerKey, img.SHA256, now.Add(time.Minute)))
	if rec.Code != http.StatusNotFound || aHits.Load() != 0 {
		t.Fatalf("peer request for a blob b lacks: %d, a asked %d times", rec.Code, aHits.Load())
	}
	// A signed request for a blob no catalogue entry names is a 404 too.
	rec = peerGet(t, h, "/images/"+strings.Repeat("0", 64), "Authorization", "Bearer "+peerToken(peerKey, strings.Repeat("0", 64), now.Add(time.Minute)))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("signed request for an unknown blob: %d", rec.Code)
	}
}
