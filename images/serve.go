package images

import (
	"bytes"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// HandlerOptions configure BlobHandler.
type HandlerOptions struct {
	// Prefix is the path the handler is mounted at. Default "/images/".
	Prefix string
	// Authorize decides whether a request may read an image (a job-scoped
	// token for the agent, an API token for people). Several images may
	// share one blob; the request is served when any of them is allowed.
	// An error wrapping inventory.ErrNotFound answers 404 (a tenant must
	// not learn that another tenant's image exists), any other 403. A nil
	// Authorize refuses everything: serving is opt-in.
	Authorize func(r *http.Request, img *inventory.Image) error
	// MaxConcurrent bounds the blob transfers in flight; beyond it the
	// handler answers 503 with Retry-After rather than queueing, so that a
	// power restoration's thousands of agents back off instead of piling
	// up connections. Default 256.
	MaxConcurrent int
	// RetryAfter is what a 503 asks the client to wait. Default 5s.
	RetryAfter time.Duration
	// PeerKey, when set, admits other instances (Peers.Key) to any blob
	// the catalogue names, without Authorize. What a peer asks for is
	// served from this store only, never fetched from a peer in turn.
	PeerKey []byte
}

// AllowAll is an Authorize for tests and single-user labs.
func AllowAll(*http.Request, *inventory.Image) error { return nil }

// BlobHandler serves the store read-only:
//
//	GET|HEAD {prefix}{sha256}           the blob: Range, multi-range, If-Range,
//	                                    ETag "sha256"; sendfile on Linux
//	GET|HEAD {prefix}{sha256}/blockmap  its BlockMap as JSON
//
// The sha256 must be 64 lowercase hex digits and name a blob some
// catalogue entry references; anything else is 404, so no path can reach
// outside the store.
func (s *Store) BlobHandler(opts HandlerOptions) http.Handler {
	if opts.Prefix == "" {
		opts.Prefix = "/images/"
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 256
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 5 * time.Second
	}
	if opts.Authorize == nil {
		opts.Authorize = func(*http.Request, *inventory.Image) error { return errors.New("image serving is not configured") }
	}
	return s.metrics.counted(&blobHandler{s: s, opts: opts, sem: make(chan struct{}, opts.MaxConcurrent),
		retryAfter: strconv.Itoa(int((opts.RetryAfter + time.Second - 1) / time.Second))})
}

type blobHandler struct {
	s          *Store
	opts       HandlerOptions
	sem        chan struct{}
	retryAfter string
}

func (h *blobHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, h.opts.Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	sha, blockMap := strings.CutSuffix(rest, "/blockmap")
	if !ValidSHA256(sha) {
		http.NotFound(w, r)
		return
	}
	peer := isPeer(r, h.opts.PeerKey, sha, time.Now())
	img, code, msg := h.authorize(r, sha, peer)
	if code != http.StatusOK {
		http.Error(w, msg, code)
		return
	}
	if !peer {
		if err := h.s.ensureBlob(r.Context(), img); err != nil {
			if r.Context().Err() == nil {
				h.s.log.Error("image blob unavailable", "sha256", sha, "err", err)
			}
			w.Header().Set("Retry-After", h.retryAfter)
			http.Error(w, "image blob not available on this instance now: retry later", http.StatusServiceUnavailable)
			return
		}
	}
	path, _ := h.s.BlobPath(sha) // sha is valid
	if blockMap {
		data, err := os.ReadFile(blockMapPath(path))
		if err != nil {
			h.s.log.Error("image block map unreadable", "sha256", sha, "err", err)
			http.Error(w, "block map unreadable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"`+sha+`.bmap"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		return
	}
	if r.Method == http.MethodGet {
		select {
		case h.sem <- struct{}{}:
			defer func() { <-h.sem }()
		default:
			w.Header().Set("Retry-After", h.retryAfter)
			http.Error(w, "too many image transfers in flight: retry later", http.StatusServiceUnavailable)
			return
		}
	}
	f, err := os.Open(path)
	if peer && errors.Is(err, fs.ErrNotExist) {
		// Another instance asks for what this one lacks as well.
		http.Error(w, "blob not on this instance", http.StatusNotFound)
		return
	}
	if err != nil {
		// Referenced but missing: the store is damaged, not the request.
		h.s.log.Error("image blob missing", "sha256", sha, "err", err)
		http.Error(w, "blob missing from the store", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "blob unreadable", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	// Content-Type set here spares ServeContent sniffing the first 512
	// bytes (a read and a seek per request).
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("ETag", `"`+sha+`"`)
	hd.Set("X-Content-Type-Options", "nosniff")
	// An *os.File lets net/http hand the body to sendfile(2) for whole
	// files and single ranges.
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// authorize finds the catalogue entries of a blob and asks Authorize (a
// peer may read any), and returns the entry it allowed.
func (h *blobHandler) authorize(r *http.Request, sha string, peer bool) (*inventory.Image, int, string) {
	imgs, err := h.s.cat.Images(r.Context())
	if err != nil {
		h.s.log.Error("image catalogue unreadable", "err", err)
		return nil, http.StatusInternalServerError, "image catalogue unreadable"
	}
	var first error
	for i := range imgs {
		if imgs[i].SHA256 != sha {
			continue
		}
		if peer {
			return &imgs[i], http.StatusOK, ""
		}
		err := h.opts.Authorize(r, &imgs[i])
		if err == nil {
			return &imgs[i], http.StatusOK, ""
		}
		if first == nil {
			first = err
		}
	}
	if first == nil || errors.Is(first, inventory.ErrNotFound) {
		return nil, http.StatusNotFound, "404 page not found"
	}
	return nil, http.StatusForbidden, first.Error()
}
