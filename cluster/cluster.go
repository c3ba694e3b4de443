// Package cluster lets several metalhall instances on one etcd cluster share
// the work. Each instance holds a session (an etcd lease kept alive) and
// registers itself under members/<id>; it owns a job while it holds the key
// owners/<job> bound to that lease. When an instance dies its lease expires
// after the TTL, etcd deletes every key bound to it, and the others — told
// at once by a watch on owners/ — claim the orphaned jobs and resume each
// from its persisted step.
//
// The TTL is the failover bound: owner death → the job's next step on
// another instance within about one TTL (10 s by default).
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Defaults of Config. DefaultPrefix is PrefixFor the inventory's default
// prefix, "/metalhall/".
const (
	DefaultPrefix = "/metalhall-cluster/"
	DefaultTTL    = 10 * time.Second
)

// PrefixFor is the cluster's key prefix beside an inventory kept in etcd
// under inventoryPrefix: next to it, never under it. The inventory's large
// transactions compare its whole prefix, so a claim or a lease expiring
// under it would make every one of them conflict.
func PrefixFor(inventoryPrefix string) string {
	return strings.TrimSuffix(inventoryPrefix, "/") + "-cluster/"
}

// ErrNoSession is returned by Claim while the instance has no live session
// with etcd (it was lost and a new one is not yet granted): claiming now
// could not be kept, so nothing new may start.
var ErrNoSession = errors.New("cluster: no live session with etcd")

// ErrIDInUse is returned by Join when another live instance is registered
// under the same instance ID.
var ErrIDInUse = errors.New("cluster: instance ID in use")

// Config says how an instance joins. Client is required; the zero value of
// every other field is its default.
type Config struct {
	Client *clientv3.Client
	// Prefix is the key prefix of everything this package writes
	// [DefaultPrefix]. Every instance of one control plane uses the same,
	// and it lies outside the inventory's prefix (PrefixFor).
	Prefix string
	// ID names this instance among the others [hostname-<random>]. It may
	// not contain "/".
	ID string
	// TTL is the session lease's life without a keep-alive, rounded up to
	// whole seconds [DefaultTTL]. etcd raises a TTL below its own minimum
	// (about 2 s with its default timings).
	TTL time.Duration
	// APIURL and ProvisioningURL are where the other instances reach this
	// one (registered in members/<id>).
	APIURL, ProvisioningURL string
	Logger                  *slog.Logger
}

// MemberInfo is an instance's registration.
type MemberInfo struct {
	ID              string    `json:"id"`
	APIURL          string    `json:"api_url"`
	ProvisioningURL string    `json:"provisioning_url"`
	Started         time.Time `json:"started"`
}

// Member is this instance's place in the cluster. Its methods are safe for
// concurrent use.
type Member struct {
	cfg  Config
	log  *slog.Logger
	ttl  int64 // seconds
	info []byte

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	orphaned chan struct{} // cap 1: an owner key was deleted

	sessionsLost, deletions atomic.Uint64 // for the metrics

	mu      sync.Mutex
	sess    *concurrency.Session // nil between sessions
	lost    chan struct{}        // closed when the claims of the current (or next) session are lost
	owners  map[string]string    // job → owner, as the watch last saw it
	closing bool
}

// Join opens a session, registers the instance and starts watching the
// owner keys. It fails at once when etcd does not answer within ctx (or
// the TTL) or the ID is taken by a live instance; Close ends the session
// and frees every job it owned.
func Join(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.Client == nil {
		return nil, errors.New("cluster: an etcd client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("cluster: TTL %v: give a positive duration (e.g. 10s), or none for the default", cfg.TTL)
	}
	if cfg.ID == "" {
		id, err := defaultID()
		if err != nil {
			return nil, err
		}
		cfg.ID = id
	}
	if err := validID(cfg.ID); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	info, err := json.Marshal(MemberInfo{ID: cfg.ID, APIURL: cfg.APIURL, ProvisioningURL: cfg.ProvisioningURL, Started: time.Now().UTC()})
	if err != nil {
		return nil, err
	}
	m := &Member{cfg: cfg, log: cfg.Logger.With("instance", cfg.ID), ttl: int64((cfg.TTL + time.Second - 1) / time.Second), info: info,
		orphaned: make(chan struct{}, 1), lost: make(chan struct{}), owners: map[string]string{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	sess, err := m.establish(ctx)
	if err != nil {
		m.cancel()
		return nil, err
	}
	m.sess = sess
	m.wg.Add(2)
	go m.keep(sess)
	go m.watchOwners()
	m.log.Info("joined the cluster", "prefix", cfg.Prefix, "ttl_s", m.ttl, "lease", fmt.Sprintf("%x", sess.Lease()))
	return m, nil
}

func defaultID() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "metalhall"
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return strings.ReplaceAll(host, "/", "-") + "-" + hex.EncodeToString(b[:]), nil
}

func validID(id string) error {
	if len(id) > 128 || strings.ContainsAny(id, "/ \t\n") {
		return fmt.Errorf("cluster: instance ID %q: use at most 128 characters, without \"/\" or spaces", id)
	}
	return nil
}

func (m *Member) key(kind, name string) string { return m.cfg.Prefix + kind + "/" + name }

// establish grants a lease, keeps it alive and registers the instance
// under it. A registration of the same ID that is still alive (this
// instance's previous life, restarted within the TTL) is waited out for
// one TTL; after that the ID is someone else's.
func (m *Member) establish(ctx context.Context) (*concurrency.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(m.ttl+1)*time.Second)
	defer cancel()
	grant, err := m.cfg.Client.Grant(ctx, m.ttl)
	if err != nil {
		return nil, fmt.Errorf("cluster: granting a lease (etcd endpoints %v): %w", m.cfg.Client.Endpoints(), err)
	}
	// The session's keep-alives run on the client's context, not ctx: they
	// outlive the call that joined.
	sess, err := concurrency.NewSession(m.cfg.Client, concurrency.WithLease(grant.ID), concurrency.WithTTL(int(m.ttl)))
	if err != nil {
		m.cfg.Client.Revoke(context.WithoutCancel(ctx), grant.ID)
		return nil, fmt.Errorf("cluster: keeping lease %x alive: %w", grant.ID, err)
	}
	key := m.key("members", m.cfg.ID)
	var inUse error // the ID was seen taken: that is the answer, whatever the last try met
	for {
		resp, err := m.cfg.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(m.info), clientv3.WithLease(sess.Lease()))).Else(clientv3.OpGet(key)).Commit()
		if err == nil && resp.Succeeded {
			return sess, nil
		}
		if err == nil {
			inUse = fmt.Errorf("%w: %q is registered by a live instance (%s): give each instance its own ID, or wait for the old one's lease to expire",
				ErrIDInUse, m.cfg.ID, registration(resp))
		} else {
			err = fmt.Errorf("cluster: registering %q: %w", m.cfg.ID, err)
		}
		select {
		case <-ctx.Done():
			sess.Close()
			if inUse != nil {
				return nil, inUse
			}
			return nil, err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func registration(resp *clientv3.TxnResponse) string {
	if len(resp.Responses) == 0 {
		return "unknown"
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return "gone meanwhile"
	}
	return string(kvs[0].Value)
}

// keep waits for the session to end. Unless the member is closing, it
// tells the claims' users (Lost), then gets a new session, retrying until
// etcd answers again.
func (m *Member) keep(sess *concurrency.Session) {
	defer m.wg.Done()
	for {
		select {
		case <-sess.Done():
		case <-m.ctx.Done():
			return // Close revokes the session
		}
		m.mu.Lock()
		closing := m.closing
		m.sess = nil
		close(m.lost)
		m.lost = make(chan struct{}) // the next session's
		m.mu.Unlock()
		if closing {
			return
		}
		m.sessionsLost.Add(1)
		if m.cfg.Client.Ctx().Err() != nil {
			// The client was closed under the member: nothing more can
			// be sent, and the lease expires by itself.
			m.log.Warn("cluster session ended with the etcd client; no new session")
			return
		}
		m.log.Warn("cluster session lost: this instance's jobs stop here and may be taken over by another instance", "lease", fmt.Sprintf("%x", sess.Lease()))
		// The lease may live on in etcd (the keep-alives were late, not
		// refused): end it, so the jobs it held are free now rather than
		// after the TTL. Failing that, it expires by itself.
		rctx, cancel := context.WithTimeout(m.ctx, time.Duration(m.ttl)*time.Second)
		m.cfg.Client.Revoke(rctx, sess.Lease())
		cancel()
		backoff := time.Second
		for {
			s, err := m.establish(m.ctx)
			if err == nil {
				sess = s
				break
			}
			if m.ctx.Err() != nil {
				return
			}
			if m.cfg.Client.Ctx().Err() != nil {
				return // closed meanwhile: see above
			}
			m.log.Warn("cluster session: retrying", "err", err, "in", backoff)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Duration(m.ttl)*time.Second)
		}
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			sess.Close()
			return
		}
		m.sess = sess
		m.mu.Unlock()
		m.log.Info("cluster session renewed", "lease", fmt.Sprintf("%x", sess.Lease()))
		m.notifyOrphaned() // jobs may have been orphaned while we were away
	}
}

// watchOwners keeps the view of owner keys current and fires Orphaned on
// every deletion. After a broken watch (no leader, compaction) it reads
// the keys again and fires once, since deletions may have been missed.
func (m *Member) watchOwners() {
	defer m.wg.Done()
	prefix := m.cfg.Prefix + "owners/"
	backoff := 100 * time.Millisecond
	for m.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(m.ctx, time.Duration(m.ttl)*time.Second)
		resp, err := m.cfg.Client.Get(ctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			if m.ctx.Err() != nil || m.cfg.Client.Ctx().Err() != nil {
				return // closing, or the client was
			}
			m.log.Debug("reading job owners", "err", err)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		view := make(map[string]string, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			view[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
		}
		m.mu.Lock()
		m.owners = view
		m.mu.Unlock()
		m.notifyOrphaned()
		// WithRequireLeader ends the watch when this member's etcd loses
		// its leader, rather than leaving it silently stale.
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(m.ctx))
		for wr := range m.cfg.Client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			deleted := false
			m.mu.Lock()
			for _, ev := range wr.Events {
				job := strings.TrimPrefix(string(ev.Kv.Key), prefix)
				if ev.Type == clientv3.EventTypeDelete {
					delete(m.owners, job)
					deleted = true
					m.deletions.Add(1)
				} else {
					m.owners[job] = string(ev.Kv.Value)
				}
			}
			m.mu.Unlock()
			if deleted {
				m.notifyOrphaned()
			}
		}
		wcancel()
	}
}

func (m *Member) notifyOrphaned() {
	select {
	case m.orphaned <- struct{}{}:
	default:
	}
}

// ID is this instance's ID.
func (m *Member) ID() string { return m.cfg.ID }

// Orphaned receives (coalesced) when a job's owner key was deleted — its
// owner released it, or the owner's lease expired — or may have been
// while the watch was down: look for jobs nobody runs now, rather than at
// the next tick.
func (m *Member) Orphaned() <-chan struct{} { return m.orphaned }

// Lost is closed when this instance's claims made so far are lost: its
// session ended (the lease expired during a partition, or etcd revoked
// it). Every job it covered must stop at once, since another instance may
// take it. Call Lost again after it closes: the member gets a new session
// by itself, and the next channel is that session's.
func (m *Member) Lost() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lost
}

// Claim takes the job for this instance unless another holds it. It says
// true when this instance owns the job now (also when it already did),
// false when another does. The key is bound to the session's lease: it
// goes when this instance dies.
func (m *Member) Claim(ctx context.Context, jobID string) (bool, error) {
	if jobID == "" || strings.Contains(jobID, "/") {
		return false, fmt.Errorf("cluster: job ID %q is not one", jobID)
	}
	m.mu.Lock()
	sess, owner, seen := m.sess, "", false
	if sess != nil {
		owner, seen = m.owners[jobID]
	}
	m.mu.Unlock()
	if sess == nil {
		return false, ErrNoSession
	}
	// Owned by another as far as the watch knows: no round trip. A stale
	// view only delays a claim until the deletion's event arrives.
	if seen && owner != m.cfg.ID {
		return false, nil
	}
	key := m.key("owners", jobID)
	resp, err := m.cfg.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, m.cfg.ID, clientv3.WithLease(sess.Lease()))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return false, fmt.Errorf("cluster: claiming job %s: %w", jobID, err)
	}
	if resp.Succeeded {
		m.mu.Lock()
		m.owners[jobID] = m.cfg.ID
		m.mu.Unlock()
		return true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return false, nil // released meanwhile: the deletion's event brings the next try
	}
	// Ours only under this session's lease: a key of a lost session is
	// about to expire, and the job with it.
	return string(kvs[0].Value) == m.cfg.ID && clientv3.LeaseID(kvs[0].Lease) == sess.Lease(), nil
}

// Release gives a job up, when this session holds it; a claim of another
// instance (or of a lost session of ours) is left alone.
func (m *Member) Release(ctx context.Context, jobID string) error {
	m.mu.Lock()
	sess := m.sess
	m.mu.Unlock()
	if sess == nil {
		return nil // the lease went, and its keys with it
	}
	key := m.key("owners", jobID)
	if _, err := m.cfg.Client.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", sess.Lease())).
		Then(clientv3.OpDelete(key)).Commit(); err != nil {
		return fmt.Errorf("cluster: releasing job %s: %w", jobID, err)
	}
	return nil
}

// Owner is the ID of the instance that owns the job, or "" when none does.
func (m *Member) Owner(ctx context.Context, jobID string) (string, error) {
	resp, err := m.cfg.Client.Get(ctx, m.key("owners", jobID))
	if err != nil {
		return "", fmt.Errorf("cluster: owner of job %s: %w", jobID, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// Members lists the live instances, this one included, by ID.
func (m *Member) Members(ctx context.Context) ([]MemberInfo, error) {
	resp, err := m.cfg.Client.Get(ctx, m.cfg.Prefix+"members/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: listing members: %w", err)
	}
	out := make([]MemberInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var mi MemberInfo
		if err := json.Unmarshal(kv.Value, &mi); err != nil {
			m.log.Warn("unreadable member registration", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, mi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// PeerProvisioningURLs are the provisioning URLs of the other live
// instances: where a blob this one lacks may be fetched.
func (m *Member) PeerProvisioningURLs(ctx context.Context) ([]string, error) {
	ms, err := m.Members(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mi := range ms {
		if mi.ID != m.cfg.ID && mi.ProvisioningURL != "" {
			out = append(out, mi.ProvisioningURL)
		}
	}
	return out, nil
}

// Close ends the session and revokes its lease: the registration and
// every job claim go at once, and the other instances are told. The
// client stays open (it is the caller's).
func (m *Member) Close() error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil
	}
	m.closing = true
	sess := m.sess
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	m.sess = nil
	select {
	case <-m.lost:
	default:
		close(m.lost)
	}
	m.mu.Unlock()
	if sess == nil {
		return nil
	}
	if err := sess.Close(); err != nil {
		return fmt.Errorf("cluster: revoking lease %x (it expires by itself within %ds): %w", sess.Lease(), m.ttl, err)
	}
	return nil
}
