package images

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

func serveFixture(t *testing.T, opts HandlerOptions) (*fixture, *httptest.Server, []byte, *inventory.Image) {
	t.Helper()
	fx := newFixture(t, Options{})
	data := diskImage(1<<20+777, 20)
	img, err := fx.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "img"})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Authorize == nil {
		opts.Authorize = AllowAll
	}
	srv := httptest.NewServer(fx.s.BlobHandler(opts))
	t.Cleanup(srv.Close)
	return fx, srv, data, img
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestServeBlobAndRanges(t *testing.T) {
	_, srv, data, img := serveFixture(t, HandlerOptions{})
	url := srv.URL + "/images/" + img.SHA256
	etag := `"` + img.SHA256 + `"`

	resp, body := get(t, url)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) || resp.Header.Get("ETag") != etag ||
		resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET: %s, %d bytes, headers %v", resp.Status, len(body), resp.Header)
	}

	hresp, err := http.Head(url)
	if err != nil || hresp.StatusCode != 200 || hresp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD: %v %v", hresp, err)
	}

	resp, body = get(t, url, "Range", "bytes=100-199")
	if resp.StatusCode != 206 || !bytes.Equal(body, data[100:200]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(data)) {
		t.Fatalf("single range: %s %q", resp.Status, resp.Header.Get("Content-Range"))
	}

	resp, body = get(t, url, "Range", "bytes=-10")
	if resp.StatusCode != 206 || !bytes.Equal(body, data[len(data)-10:]) {
		t.Fatalf("suffix range: %s", resp.Status)
	}

	// Multi-range: multipart/byteranges with each part right.
	resp, body = get(t, url, "Range", "bytes=0-9,1000-1999,1048576-")
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 206 || mt != "multipart/byteranges" {
		t.Fatalf("multi-range: %s %s", resp.Status, mt)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	wantParts := [][2]int{{0, 10}, {1000, 2000}, {1048576, len(data)}}
	for i, w := range wantParts {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		got, _ := io.ReadAll(p)
		if !bytes.Equal(got, data[w[0]:w[1]]) || p.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", w[0], w[1]-1, len(data)) {
			t.Fatalf("part %d: %q, %d bytes", i, p.Header.Get("Content-Range"), len(got))
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more parts than asked for: %v", err)
	}

	resp, _ = get(t, url, "Range", fmt.Sprintf("bytes=%d-", len(data)+10))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(data)) {
		t.Fatalf("range beyond the end: %s %q", resp.Status, resp.Header.Get("Content-Range"))
	}

	// If-Range: the range only when the representation is still the one
	// the client has; otherwise the whole blob.
	resp, body = get(t, url, "Range", "bytes=5-9", "If-Range", etag)
	if resp.StatusCode != 206 || !bytes.Equal(body, data[5:10]) {
		t.Fatalf("If-Range matching: %s", resp.Status)
	}
	resp, body = get(t, url, "Range", "bytes=5-9", "If-Range", `"other"`)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("If-Range not matching: %s, %d bytes", resp.Status, len(body))
	}
	resp, _ = get(t, url, "If-None-Match", etag)
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %s", resp.Status)
	}

	// The block map, as JSON.
	resp, body = get(t, url+"/blockmap")
	var m imagefmt.BlockMap
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || jsonDecode(body, &m) != nil ||
		m.Validate() != nil || m.SHA256 != img.UncompressedSHA256 || m.MappedBytes != img.MappedBytes {
		t.Fatalf("block map: %s %q %+v", resp.Status, body[:min(len(body), 200)], m)
	}

	req, _ := http.NewRequest(http.MethodPost, url, nil)
	presp, err := http.DefaultClient.Do(req)
	if err != nil || presp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %v %v", presp, err)
	}
	presp.Body.Close()
}

// Requests whose path is not exactly a known sha256 are 404, however they
// are spelled, and never reach the file system outside the store. They are
// sent as raw request lines so no client cleans them up first.
func TestServeTraversal(t *testing.T) {
	fx, srv, _, img := serveFixture(t, HandlerOptions{})
	unknown := sum([]byte("not stored"))
	paths := []string{
		"/images/../metalhall.db",
		"/images/..%2fmetalhall.db",
		"/images/%2e%2e%2f%2e%2e%2fmetalhall.db",
		"/images/%2e%2e/%2e%2e/etc/passwd",
		"/images/" + strings.ToUpper(img.SHA256),
		"/images/" + img.SHA256[:63],
		"/images/" + img.SHA256 + "0",
		"/images/" + img.SHA256 + "/",
		"/images/" + img.SHA256 + "/../" + img.SHA256,
		"/images/" + img.SHA256 + ".bmap.json",
		"/images/" + img.SHA256 + "%00",
		"/images/" + img.SHA256[:62] + "%2f",
		"/images/sha256/" + img.SHA256[:2] + "/" + img.SHA256,
		"/images/tmp",
		"/images/",
		"/images/" + unknown,
		"/other/" + img.SHA256,
	}
	for _, p := range paths {
		status := rawGet(t, srv.Listener.Addr().String(), p)
		if status != 404 && status != 400 {
			t.Errorf("GET %s: status %d, want 404", p, status)
		}
	}
	// And called directly, with paths a router might hand over unchanged.
	h := fx.s.BlobHandler(HandlerOptions{Authorize: AllowAll})
	for _, p := range []string{"/images/../../etc/passwd", "/images/./" + img.SHA256, "/images//" + img.SHA256} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL.Path = p
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 404 {
			t.Errorf("direct GET %s: %d", p, w.Code)
		}
	}
}

func rawGet(t *testing.T, addr, path string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestServeAuthorize(t *testing.T) {
	var deny error
	_, srv, _, img := serveFixture(t, HandlerOptions{Authorize: func(r *http.Request, im *inventory.Image) error {
		if im.Name != "img" {
			return errors.New("wrong image")
		}
		return deny
	}})
	url := srv.URL + "/images/" + img.SHA256
	for _, c := range []struct {
		deny error
		code int
	}{
		{nil, 200},
		{&inventory.NotFoundError{Kind: "image", Name: "img"}, 404},
		{errors.New("token is for another job"), 403},
	} {
		deny = c.deny
		for _, u := range []string{url, url + "/blockmap"} {
			if resp, _ := get(t, u); resp.StatusCode != c.code {
				t.Errorf("GET %s with Authorize → %v: %s, want %d", u, c.deny, resp.Status, c.code)
			}
		}
	}

	// No Authorize at all: nothing is served.
	fx := newFixture(t, Options{})
	im, _ := fx.s.Import(ctx, strings.NewReader("x"), ImportOptions{Name: "x"})
	r := httptest.NewRequest(http.MethodGet, "/images/"+im.SHA256, nil)
	w := httptest.NewRecorder()
	fx.s.BlobHandler(HandlerOptions{}).ServeHTTP(w, r)
	if w.Code != 403 {
		t.Fatalf("nil Authorize: %d", w.Code)
	}
}

// With the transfer limit reached, a GET is refused at once with 503 and
// Retry-After; HEAD and the block map still answer.
func TestServeConcurrencyLimit(t *testing.T) {
	fx := newFixture(t, Options{})
	data := diskImage(64<<20, 21) // larger than socket buffers: the first transfer blocks
	img, err := fx.s.Import(ctx, bytes.NewReader(data), ImportOptions{Name: "big"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fx.s.BlobHandler(HandlerOptions{Authorize: AllowAll, MaxConcurrent: 1, RetryAfter: 3 * time.Second}))
	defer srv.Close()
	url := srv.URL + "/images/" + img.SHA256

	// A client that reads the headers and then stalls holds the slot.
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /images/%s HTTP/1.1\r\nHost: x\r\n\r\n", img.SHA256)
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	resp, _ := get(t, url)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("second GET: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	if h, err := http.Head(url); err != nil || h.StatusCode != 200 {
		t.Fatalf("HEAD while saturated: %v %v", h, err)
	}
	c.Close()
	// The slot comes back once the stalled transfer fails.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := get(t, url, "Range", "bytes=0-99")
		if resp.StatusCode == 206 && bytes.Equal(body, data[:100]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %s", resp.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
