package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// newHTTPClient is the client ImportURL uses. Every phase that can hang
// has a timeout; the transfer itself has none (a large image on a slow
// link takes long) and is bounded instead by Options.StallTimeout. It
// connects only where the policy allows, redirects included, and never
// through a proxy: the policy is checked on the address it connects to.
func newHTTPClient(policy *URLPolicy) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&dialer{policy: policy, d: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConns:          4,
			// Ask for the bytes as they are: a transparently gunzipped
			// body would not match the publisher's checksum.
			DisableCompression: true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return fmt.Errorf("more than 5 redirects")
			}
			return nil
		},
	}
}

// ImportURL downloads an image over HTTP(S) and imports it as Import does.
func (s *Store) ImportURL(ctx context.Context, rawURL string, opts ImportOptions) (*inventory.Image, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("image %q: %w", opts.Name, invalid("url", "%q is not an http:// or https:// URL", rawURL))
	}
	where := u.Redacted()
	if err := inventory.ValidateImageName(opts.Name); err != nil {
		return nil, fmt.Errorf("image %q: %w", opts.Name, err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", opts.Name, err)
	}
	req.Header.Set("User-Agent", "metalhall")
	resp, err := s.client.Do(req)
	if err != nil {
		var re *URLRefusedError
		if errors.As(err, &re) {
			// The refusal alone: the wrapping *url.Error would repeat the
			// URL, and for a redirect name a hop the caller never gave.
			return nil, fmt.Errorf("image %q: fetch %s: %w", opts.Name, where, re)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("image %q: fetch %s: %w", opts.Name, where, err)
		}
		// The destination is allowed, so its answer may be told: a closed
		// port or an unknown name is the caller's to fix, not a fault of
		// the service.
		return nil, fmt.Errorf("image %q: %w", opts.Name, invalid("url", "could not fetch %s: %v", where, errors.Unwrap(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("image %q: fetch %s: %w", opts.Name, where, invalid("url", "the server answered %s", resp.Status))
	}
	stall := time.AfterFunc(time.Hour, func() {
		cancel(fmt.Errorf("fetch %s: no data for %s", where, s.opts.StallTimeout))
	})
	stall.Stop()
	body := &stallReader{r: resp.Body, t: stall, d: s.opts.StallTimeout}
	defer stall.Stop()
	img, err := s.Import(ctx, body, opts)
	if err != nil && context.Cause(ctx) != nil && ctx.Err() != nil {
		// Say why: a stall reads better than "context canceled".
		return nil, fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	return img, err
}

// stallReader runs a timer only while a Read waits on the network, so
// time the import spends on its own (a slow xz decoder holding the
// pipeline back) never counts as the server stalling.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.t.Reset(s.d)
	n, err := s.r.Read(p)
	s.t.Stop()
	return n, err
}
