package images

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

// Peers lets a store fetch the blobs it lacks from the other instances of
// a control plane: they share one catalogue, but each keeps the blobs it
// imported (or fetched) in its own directory.
//
// A peer request is signed with Key, which every instance derives from the
// sealing key they share, for one blob and a few minutes: the serving
// side (HandlerOptions.PeerKey) admits it without a user's or an agent's
// token. A fetched blob is checked against the catalogue's sha256 — and
// its block map made again here from its bytes — before it is published,
// so a peer is trusted with nothing.
type Peers struct {
	// URLs are the base URLs of the other instances' listeners that serve
	// /images/ with PeerKey set, asked at each fetch and tried in order.
	URLs func(ctx context.Context) ([]string, error)
	// Key signs the requests (at least 16 bytes).
	Key []byte
	// Client makes the requests [one with connect and header timeouts].
	Client *http.Client
}

// ErrBlobUnavailable is a blob the catalogue names that is on neither this
// instance nor any peer that answered.
var ErrBlobUnavailable = errors.New("image blob unavailable")

// BlobUnavailableError says which peers were asked and what each answered.
type BlobUnavailableError struct {
	Image, SHA256 string
	Tried         []string // "URL: what went wrong"
}

func (e *BlobUnavailableError) Error() string {
	if len(e.Tried) == 0 {
		return fmt.Sprintf("image %q: blob sha256 %s is not on this instance and no other instance is live to fetch it from: import the image again, or start an instance that has it", e.Image, e.SHA256)
	}
	return fmt.Sprintf("image %q: blob sha256 %s is not on this instance and no other instance served it (%s): import the image again, or start an instance that has it",
		e.Image, e.SHA256, strings.Join(e.Tried, "; "))
}

func (e *BlobUnavailableError) Unwrap() error { return ErrBlobUnavailable }

// peerTokenTTL is how long a signed peer request may be used: long enough
// for clocks a little apart, short enough that a copied header is soon
// worthless. The transfer itself may take longer; only its start counts.
const peerTokenTTL = 5 * time.Minute

const peerTokenPrefix = "mhpeer."

// peerToken signs a request for one blob, valid until expires.
func peerToken(key []byte, sha string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return peerTokenPrefix + exp + "." + peerMAC(key, sha, exp)
}

func peerMAC(key []byte, sha, exp string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("metalhall peer blob\n" + sha + "\n" + exp))
	return hex.EncodeToString(m.Sum(nil))
}

// isPeer says whether r carries a valid peer token for the blob sha.
func isPeer(r *http.Request, key []byte, sha string, now time.Time) bool {
	if len(key) == 0 {
		return false
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "+peerTokenPrefix)
	if !ok {
		return false
	}
	exp, mac, ok := strings.Cut(tok, ".")
	if !ok {
		return false
	}
	until, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() > until || time.Unix(until, 0).Sub(now) > 2*peerTokenTTL {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(peerMAC(key, sha, exp)))
}

func defaultPeerClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // the bytes as stored: they are checksummed
	}}
}

// fetchCall is one fetch of a blob in flight, shared by every request that
// needs that blob meanwhile.
type fetchCall struct {
	done chan struct{}
	err  error
}

// ensureBlob makes sure the image's blob is in this store, fetching it from
// a peer when it is not. Without Peers it does nothing: a missing blob is
// then reported where it is read, as before.
func (s *Store) ensureBlob(ctx context.Context, img *inventory.Image) error {
	if s.opts.Peers == nil {
		return nil
	}
	p, err := s.BlobPath(img.SHA256)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// The fetch outlives the request that started it (others may be
	// waiting on it); its own timeouts bound it.
	return s.fetchShared(ctx, context.WithoutCancel(ctx), img, "requested")
}

// fetchShared waits (within ctx) for the one fetch of the image's blob,
// starting it under fetchCtx unless one is already in flight: a request
// and the replicator needing the same blob share one transfer. why says
// in the log what started it.
func (s *Store) fetchShared(ctx, fetchCtx context.Context, img *inventory.Image, why string) error {
	s.mu.Lock()
	c := s.fetching[img.SHA256]
	if c == nil {
		c = &fetchCall{done: make(chan struct{})}
		s.fetching[img.SHA256] = c
		go func() {
			c.err = s.fetchFromPeers(fetchCtx, img, why)
			s.mu.Lock()
			delete(s.fetching, img.SHA256)
			s.mu.Unlock()
			close(c.done)
		}()
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetchFromPeers tries each peer in turn until one serves the right bytes.
func (s *Store) fetchFromPeers(ctx context.Context, img *inventory.Image, why string) (err error) {
	defer func() {
		switch {
		case err == nil:
			s.metrics.fetchDone.Inc()
		case ctx.Err() == nil && !errors.Is(err, inventory.ErrNotFound):
			// Neither stopped nor deleted meanwhile: a real failure.
			s.metrics.fetchFailed.Inc()
		}
	}()
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	urls, err := s.opts.Peers.URLs(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("image %q: listing peer instances: %w", img.Name, err)
	}
	e := &BlobUnavailableError{Image: img.Name, SHA256: img.SHA256}
	for _, base := range urls {
		start := time.Now()
		if err := s.fetchFrom(ctx, base, img); err != nil {
			if errors.Is(err, inventory.ErrNotFound) || ctx.Err() != nil {
				// Deleted meanwhile, or stopping: no other peer would do.
				return err
			}
			s.log.Warn("image blob from a peer", "peer", base, "sha256", img.SHA256, "err", err)
			e.Tried = append(e.Tried, base+": "+err.Error())
			continue
		}
		s.log.Info("image blob fetched from a peer", "image", img.Ref(), "sha256", img.SHA256, "peer", base, "size", img.Size,
			"seconds", time.Since(start).Seconds(), "why", why)
		return nil
	}
	return e
}

// fetchFrom streams the blob from one peer into a temp file while it
// checksums it and makes its block map, and publishes it only when both
// checksums are the catalogue's.
func (s *Store) fetchFrom(ctx context.Context, base string, img *inventory.Image) error {
	format, err := imagefmt.Parse(img.Format)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/images/"+img.SHA256, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+peerToken(s.opts.Peers.Key, img.SHA256, time.Now().Add(peerTokenTTL)))
	req.Header.Set("User-Agent", "metalhall-peer")
	client := s.opts.Peers.Client
	if client == nil {
		client = s.peerClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answered %s", resp.Status)
	}
	// A fetch decodes like an import and takes an import's slot: it waits
	// for one rather than failing the agent that needs the blob.
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	tmp, f, err := s.createTemp()
	if err != nil {
		return err
	}
	placed := false
	defer func() {
		if !placed {
			f.Close()
			os.Remove(tmp)
		}
		s.mu.Lock()
		delete(s.temps, tmp)
		s.mu.Unlock()
	}()
	stall := time.AfterFunc(time.Hour, func() { cancel(fmt.Errorf("no data for %s", s.opts.StallTimeout)) })
	stall.Stop()
	defer stall.Stop()
	// No tenant: a copy of a stored image counts against no quota.
	res, err := s.ingest(ctx, &stallReader{r: resp.Body, t: stall, d: s.opts.StallTimeout}, f, format, &quota{s: s})
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", err, cause)
		}
		return err
	}
	if res.sha != img.SHA256 || (img.UncompressedSHA256 != "" && res.bmap.SHA256 != img.UncompressedSHA256) {
		ce := &ChecksumError{Expected: img.SHA256, Got: res.sha}
		if res.format != imagefmt.Raw {
			ce.GotUncompressed = res.bmap.SHA256
		}
		return ce
	}
	if !s.noSync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	s.commit.Lock()
	defer s.commit.Unlock()
	// Deleted from the catalogue meanwhile: GC would only remove it again.
	if shared, err := s.referenced(ctx, img.SHA256); err != nil || !shared {
		if err == nil {
			err = fmt.Errorf("image %q: %w", img.Name, inventory.ErrNotFound)
		}
		return err
	}
	if _, err := s.placeBlob(tmp, res); err != nil {
		return err
	}
	placed = true
	return nil
}
