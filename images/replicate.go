package images

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// ReplicateOptions tune Replicate. The zero value of each field is its
// default.
type ReplicateOptions struct {
	// Interval is how often the catalogue is compared with the blobs here
	// when nothing wakes the replicator sooner [DefaultReplicateInterval].
	// It is what notices an image imported through no path that Wake
	// sees, and what retries a blob whose backoff has run out.
	Interval time.Duration
	// Wake, when set, returns a channel closed when the catalogue may have
	// changed (the inventory's event feed: an import or a delete through
	// the API is followed by its audit event on every instance). Called
	// once per wait.
	Wake func() <-chan struct{}
	// MinGap is the least time between two comparisons started by Wake,
	// so that a busy event feed (a boot storm) costs at most one cheap
	// comparison per MinGap [time.Second].
	MinGap time.Duration
	// Fetches is how many blobs are fetched at once [2]. Each also takes
	// an import slot while it decodes.
	Fetches int
	// Backoff is the first wait before a blob no peer served is tried
	// again; it doubles with each failure up to MaxBackoff [5s, 5m].
	Backoff, MaxBackoff time.Duration

	// afterPass, in tests, is called after each comparison with the
	// number of blobs then missing here.
	afterPass func(missing int)
}

// DefaultReplicateInterval is ReplicateOptions.Interval's default.
const DefaultReplicateInterval = 30 * time.Second

// missingBlobs compares the catalogue with the blob directory: the
// blobs it names that are not here (one image for each), and the set of
// every sha256 it names. Reading the catalogue costs no I/O on either
// engine (bbolt's pages are mapped, etcd's mirror is in memory); a stat
// per blob is the rest.
func (s *Store) missingBlobs(ctx context.Context) (map[string]*inventory.Image, map[string]bool, error) {
	imgs, err := s.cat.Images(ctx)
	if err != nil {
		return nil, nil, err
	}
	named := make(map[string]bool, len(imgs))
	miss := make(map[string]*inventory.Image)
	for i := range imgs {
		sha := imgs[i].SHA256
		if named[sha] {
			continue
		}
		named[sha] = true
		p, err := s.BlobPath(sha)
		if err != nil {
			continue // not a blob this store could hold
		}
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			miss[sha] = &imgs[i]
		} else if err != nil {
			return nil, nil, err
		}
	}
	return miss, named, nil
}

// blobBackoff is a blob no peer served, and when to try it again.
type blobBackoff struct {
	failures int
	next     time.Time
}

// Replicate keeps on this instance every blob the catalogue names,
// fetching each one it lacks from a peer (Options.Peers) before any
// machine asks for it: when the instance that imported an image dies, the
// others already hold its bytes. It compares the catalogue with the blobs
// here at once, then whenever Wake fires or Interval passes; fetches are
// bounded (Fetches), verified as on-demand fetches are, shared with a
// request that needs the same blob meanwhile, and a blob no peer served
// waits out a doubling backoff. An image gone from the catalogue since
// the last comparison makes it run GC, which removes the blob here too.
//
// Without Peers it returns at once. Otherwise it runs until ctx ends,
// which also cuts its fetches short (one cut short leaves nothing behind;
// its last cleanup may finish just after Replicate returns). A fetch a
// request started and the replicator joined goes on for the request.
func (s *Store) Replicate(ctx context.Context, o ReplicateOptions) error {
	if s.opts.Peers == nil {
		return nil
	}
	if o.Interval <= 0 {
		o.Interval = DefaultReplicateInterval
	}
	if o.MinGap <= 0 {
		o.MinGap = time.Second
	}
	if o.Fetches <= 0 {
		o.Fetches = 2
	}
	if o.Backoff <= 0 {
		o.Backoff = 5 * time.Second
	}
	if o.MaxBackoff < o.Backoff {
		o.MaxBackoff = max(5*time.Minute, o.Backoff)
	}
	r := &replicator{s: s, o: o, backoff: map[string]*blobBackoff{}, running: map[string]bool{},
		slots: make(chan struct{}, o.Fetches), finished: make(chan struct{}, 1)}
	defer r.wg.Wait()
	return r.run(ctx)
}

type replicator struct {
	s *Store
	o ReplicateOptions
	// named is every sha256 the catalogue named at the last comparison.
	named map[string]bool

	wg       sync.WaitGroup
	slots    chan struct{} // one per fetch running; cap Fetches
	finished chan struct{} // cap 1: a fetch ended, a slot is free

	mu      sync.Mutex
	running map[string]bool         // sha256 being fetched
	backoff map[string]*blobBackoff // sha256 that failed last time
}

func (r *replicator) run(ctx context.Context) error {
	var wake <-chan struct{} // nil without Wake: never ready
	for {
		started := time.Now()
		// Taken before the comparison: a change committed during it still
		// wakes the next wait.
		if r.o.Wake != nil {
			wake = r.o.Wake()
		}
		next := r.pass(ctx)
		timer := time.NewTimer(min(r.o.Interval, next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-r.finished:
			// A slot is free: start what waited for one.
			timer.Stop()
		case <-wake:
			timer.Stop()
			// Coalesce a busy feed: at most one comparison per MinGap.
			if gap := r.o.MinGap - time.Since(started); gap > 0 {
				t := time.NewTimer(gap)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
		}
	}
}

// pass compares once and starts the fetches it can; it returns how soon
// a blob's backoff ends (or Interval when none waits).
func (r *replicator) pass(ctx context.Context) time.Duration {
	s := r.s
	miss, named, err := s.missingBlobs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("image replication: comparing the catalogue with the blobs here", "err", err)
		}
		return r.o.Interval
	}
	gone := false
	for sha := range r.named {
		if !named[sha] {
			gone = true
			break
		}
	}
	r.named = named
	if gone {
		// GC takes the commit lock, as a fetch does to place its blob: it
		// never sees half a fetch, and a fetch finishing after it places
		// nothing the catalogue no longer names.
		if _, err := s.GC(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("image replication: removing the blobs of deleted images", "err", err)
		}
	}
	if r.o.afterPass != nil {
		defer r.o.afterPass(len(miss))
	}
	now := time.Now()
	next := r.o.Interval
	r.mu.Lock()
	defer r.mu.Unlock()
	for sha := range r.backoff {
		if !named[sha] {
			delete(r.backoff, sha) // deleted: never fetched again
		}
	}
	for sha, img := range miss {
		if r.running[sha] {
			continue
		}
		if b := r.backoff[sha]; b != nil && now.Before(b.next) {
			next = min(next, b.next.Sub(now))
			continue
		}
		select {
		case r.slots <- struct{}{}:
		default:
			return next // all slots busy: a finishing fetch wakes the loop
		}
		r.running[sha] = true
		r.wg.Add(1)
		go r.fetch(ctx, img)
	}
	return next
}

// fetch brings one blob here; a failure starts or lengthens its backoff.
func (r *replicator) fetch(ctx context.Context, img *inventory.Image) {
	defer r.wg.Done()
	// Cut short by ctx (shutdown), unlike a request's fetch: the
	// replicator waits for its own before Replicate returns.
	var err error
	if p, perr := r.s.BlobPath(img.SHA256); perr != nil {
		err = perr
	} else if _, serr := os.Stat(p); serr != nil {
		// Not fetched by a request since the comparison.
		err = r.s.fetchShared(ctx, ctx, img, "replicated")
	}
	r.mu.Lock()
	delete(r.running, img.SHA256)
	switch {
	case err == nil:
		delete(r.backoff, img.SHA256)
	case ctx.Err() == nil && !errors.Is(err, inventory.ErrNotFound):
		b := r.backoff[img.SHA256]
		if b == nil {
			b = &blobBackoff{}
			r.backoff[img.SHA256] = b
		}
		b.failures++
		d := r.o.Backoff << min(b.failures-1, 20)
		if d <= 0 || d > r.o.MaxBackoff {
			d = r.o.MaxBackoff
		}
		b.next = time.Now().Add(d)
		r.s.log.Warn("image replication: blob not fetched, trying again later", "image", img.Ref(), "sha256", img.SHA256,
			"failures", b.failures, "retry_in", d, "err", err)
	}
	r.mu.Unlock()
	<-r.slots
	select {
	case r.finished <- struct{}{}:
	default:
	}
}
