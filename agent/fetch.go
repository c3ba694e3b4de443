package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FetchOptions control how an image is streamed over HTTP.
type FetchOptions struct {
	Client *http.Client // default: a client with connect/header timeouts
	Header http.Header  // extra request headers (e.g. Authorization)
	// Retries is how many times a dropped or stalled transfer is resumed
	// with a Range request before giving up (default 5).
	Retries int
	// Backoff is the wait before the first resume; it doubles each time,
	// up to 30 s (default 1 s).
	Backoff time.Duration
	// Stall aborts an attempt that delivers no bytes for this long, so a
	// half-dead connection turns into a resume instead of a hang (default 60 s).
	Stall time.Duration
	Log   *slog.Logger
}

func (o *FetchOptions) defaults() {
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy:                 nil, // the agent never goes through a proxy
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true, // the image is compressed already; keep offsets byte-exact
			// One long transfer per image: nothing to gain from keeping
			// the connection, and a resume wants a fresh one anyway.
			DisableKeepAlives: true,
		}}
	}
	if o.Retries == 0 {
		o.Retries = 5
	}
	if o.Backoff == 0 {
		o.Backoff = time.Second
	}
	if o.Stall == 0 {
		o.Stall = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// resumableBody is the body of a GET that survives dropped connections:
// when a read fails it re-requests from the current offset with Range
// (and If-Range, so a changed object is an error, not silent corruption).
type resumableBody struct {
	ctx  context.Context
	url  string
	opt  FetchOptions
	off  int64 // bytes delivered to the caller
	size int64 // total length, -1 if unknown
	etag string

	body    io.ReadCloser
	cancel  context.CancelFunc
	stall   *time.Timer
	resumes int

	mu      sync.Mutex
	stalled bool
}

// openResumable starts the download; the caller must Close the result.
func openResumable(ctx context.Context, url string, opt FetchOptions) (*resumableBody, error) {
	opt.defaults()
	r := &resumableBody{ctx: ctx, url: url, opt: opt, size: -1}
	if err := r.request(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *resumableBody) request() error {
	actx, cancel := context.WithCancel(r.ctx)
	req, err := http.NewRequestWithContext(actx, http.MethodGet, r.url, nil)
	if err != nil {
		cancel()
		return fmt.Errorf("image %s: %w", r.url, err)
	}
	for k, v := range r.opt.Header {
		req.Header[k] = v
	}
	if r.off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(r.off, 10)+"-")
		// If-Range only works with strong validators; a weak ETag would
		// turn every resume into a full 200 answer.
		if r.etag != "" && !strings.HasPrefix(r.etag, "W/") {
			req.Header.Set("If-Range", r.etag)
		}
	}
	resp, err := r.opt.Client.Do(req)
	if err != nil {
		cancel()
		return fmt.Errorf("image %s: %w", r.url, err)
	}
	switch {
	case r.off == 0 && resp.StatusCode == http.StatusOK:
		r.size = resp.ContentLength
		r.etag = resp.Header.Get("ETag")
	case r.off > 0 && resp.StatusCode == http.StatusPartialContent:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil || start != r.off {
			resp.Body.Close()
			cancel()
			return fmt.Errorf("image %s: asked for bytes from %d, server sent Content-Range %q: %w", r.url, r.off, resp.Header.Get("Content-Range"), errNoResume)
		}
	case r.off > 0 && resp.StatusCode == http.StatusOK:
		resp.Body.Close()
		cancel()
		if r.etag != "" {
			return fmt.Errorf("image %s changed on the server during the download (ETag no longer %s): %w", r.url, r.etag, errNoResume)
		}
		return fmt.Errorf("image %s: server ignored the Range request (HTTP 200): %w", r.url, errNoResume)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		return &httpStatusError{URL: r.url, Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	r.body, r.cancel = resp.Body, cancel
	r.mu.Lock()
	r.stalled = false
	r.mu.Unlock()
	r.stall = time.AfterFunc(r.opt.Stall, func() {
		r.mu.Lock()
		r.stalled = true
		r.mu.Unlock()
		cancel()
	})
	return nil
}

// errNoResume marks answers that make resuming pointless.
var errNoResume = errors.New("cannot resume")

type httpStatusError struct {
	URL  string
	Code int
	Body string
}

func (e *httpStatusError) Error() string {
	return fmt.Sprintf("%s: HTTP %d %s", e.URL, e.Code, e.Body)
}

func contentRangeStart(h string) (int64, error) {
	// "bytes 100-199/200"
	s, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, errors.New("no bytes unit")
	}
	s, _, ok = strings.Cut(s, "-")
	if !ok {
		return 0, errors.New("no range")
	}
	return strconv.ParseInt(s, 10, 64)
}

func (r *resumableBody) closeAttempt() {
	if r.stall != nil {
		r.stall.Stop()
	}
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.cancel != nil {
		r.cancel()
	}
}

func (r *resumableBody) Read(p []byte) (int, error) {
	if r.body == nil {
		return 0, errors.New("read after close")
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if n > 0 {
		r.stall.Reset(r.opt.Stall)
	}
	if err == nil || (err == io.EOF && (r.size < 0 || r.off == r.size)) {
		return n, err
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if rerr := r.resume(err); rerr != nil {
		return n, rerr
	}
	return n, nil
}

// resume reconnects from r.off after cause broke the transfer, with
// backoff, until it works or the retries are spent.
func (r *resumableBody) resume(cause error) error {
	r.mu.Lock()
	if r.stalled {
		cause = fmt.Errorf("no data for %s: %w", r.opt.Stall, cause)
	}
	r.mu.Unlock()
	r.closeAttempt()
	for {
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		if r.resumes >= r.opt.Retries {
			return fmt.Errorf("image %s: transfer failed at byte %d after %d resumes: %w", r.url, r.off, r.resumes, cause)
		}
		wait := min(r.opt.Backoff<<r.resumes, 30*time.Second)
		r.resumes++
		r.opt.Log.Warn("image transfer interrupted, resuming", "url", r.url, "offset", r.off, "attempt", r.resumes, "wait", wait, "err", cause)
		t := time.NewTimer(wait)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return r.ctx.Err()
		case <-t.C:
		}
		err := r.request()
		if err == nil {
			return nil
		}
		// A server that answers is authoritative (404, changed object,
		// no Range support): only transport errors are worth a retry.
		var hs *httpStatusError
		if errors.As(err, &hs) || errors.Is(err, errNoResume) {
			return err
		}
		cause = err
	}
}

func (r *resumableBody) Close() error {
	r.closeAttempt()
	return nil
}
