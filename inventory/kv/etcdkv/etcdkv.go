// Package etcdkv is the kv engine over an etcd cluster: several metalhall
// instances share one inventory.
//
// Every instance keeps a mirror of the inventory's keys in memory, loaded
// at one revision and kept current by a watch. Views read a snapshot of the
// mirror: they are fast, and they keep answering when the cluster has lost
// quorum (DHCP and boot for known machines go on). Updates run over a
// snapshot too and commit one etcd transaction guarded by compares on
// everything they read, so they are serializable; one that loses is run
// again over a newer snapshot. A transaction too large for one etcd request
// commits through an intent (see intent.go).
//
// Key layout under Prefix:
//
//	b/<bucket>/<key>  records
//	s/<bucket>        the bucket's sequence (8 bytes, big endian)
//	k/<bucket>        the bucket exists
//	d/<bucket>        rewritten by every delete in the bucket: a range
//	                  compare cannot see a key deleted since a snapshot
//	i                 the intent of a large transaction being applied
//
// Keys and values a transaction returns, and the values of the changes
// Follow delivers, are the mirror's own memory: read them, copy what must
// outlive the transaction, never change them.
package etcdkv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metalhall/metalhall/inventory/kv"
)

// Config says which cluster to use and how.
type Config struct {
	Endpoints      []string      // e.g. https://10.0.0.1:2379
	CA, Cert, Key  string        // PEM file paths; empty: plain TCP
	Prefix         string        // key prefix of this inventory, default "/metalhall/"
	DialTimeout    time.Duration // default 5s
	RequestTimeout time.Duration // per etcd call, default 5s
	MaxTxnOps      int           // the server's --max-txn-ops, default 128
	Logger         *slog.Logger
}

const (
	defaultPrefix  = "/metalhall/"
	defaultTimeout = 5 * time.Second
	defaultTxnOps  = 128

	// maxRequestBytes is what one etcd request may carry here. The
	// server's default --max-request-bytes is 1.5 MiB; the margin is for
	// compares, keys and gRPC framing.
	maxRequestBytes = 1400 * 1024

	// maxAttempts bounds how often an Update is run again after losing
	// to a concurrent writer before it gives up with kv.ErrConflict.
	maxAttempts = 16
)

// Engine is a kv.Engine and kv.Follower over etcd.
type Engine struct {
	cli       *clientv3.Client
	cfg       Config
	prefix    string
	endpoints string // for messages
	log       *slog.Logger

	m *mirror

	// writeMu keeps one writer per instance, like bbolt: the inventory
	// applies its in-memory views in commit order.
	writeMu   sync.Mutex
	writeTxns atomic.Uint64
	// commitKey is this engine's commit marker (commitPrefix + a random
	// nonce); commitSeq numbers its commits (under writeMu).
	commitKey string
	commitSeq uint64

	// hookAfterIntent, when set (tests), runs after a large transaction's
	// intent committed; an error makes Update return there, as if the
	// process had died before applying the intent.
	hookAfterIntent func() error

	// kick wakes the watch from its backoff: an Update waits for it.
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	closed sync.Once
}

var (
	_ kv.Engine   = (*Engine)(nil)
	_ kv.Follower = (*Engine)(nil)
)

// Open connects to the cluster, loads every key under Prefix into memory
// and starts watching for changes.
func Open(ctx context.Context, cfg Config) (*Engine, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd engine: no endpoints: name at least one member of the cluster (e.g. https://10.0.0.1:2379)")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = defaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		// Else "/metalhall" would also hold the keys of "/metalhall2/".
		return nil, fmt.Errorf("etcd engine: prefix %q does not end with '/': end it with one (e.g. %q)", cfg.Prefix, cfg.Prefix+"/")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultTimeout
	}
	if cfg.MaxTxnOps == 0 {
		cfg.MaxTxnOps = defaultTxnOps
	}
	if cfg.MaxTxnOps < 4 {
		return nil, fmt.Errorf("etcd engine: MaxTxnOps %d is too small: set it to the cluster's --max-txn-ops (etcd's default is 128)", cfg.MaxTxnOps)
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("etcd engine: a client certificate needs its key and a key its certificate: give both or neither")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ccfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Logger:      zap.NewNop(),
		Context:     context.WithoutCancel(ctx),
	}
	if cfg.CA != "" || cfg.Cert != "" {
		tlsInfo := transport.TLSInfo{TrustedCAFile: cfg.CA, CertFile: cfg.Cert, KeyFile: cfg.Key}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd engine: TLS files (CA %q, cert %q, key %q): %w", cfg.CA, cfg.Cert, cfg.Key, err)
		}
		ccfg.TLS = tc
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("etcd engine: connect to %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	e := &Engine{
		cli:       cli,
		cfg:       cfg,
		prefix:    cfg.Prefix,
		endpoints: strings.Join(cfg.Endpoints, ","),
		log:       log,
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		commitKey: commitPrefix + rand.Text(),
	}
	e.m = newMirror()
	tree, rev, err := e.load(ctx)
	if err != nil {
		cli.Close()
		return nil, err
	}
	e.reset(tree, rev)
	e.m.ack(rev, true)
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	go e.watch(wctx)
	return e, nil
}

// Client is the etcd client, shared with what else the instance keeps in
// etcd (job ownership).
func (e *Engine) Client() *clientv3.Client { return e.cli }

// Revision is the etcd revision the mirror has applied.
func (e *Engine) Revision() int64 { return e.m.acked() }

// Prefix is the key prefix of this inventory.
func (e *Engine) Prefix() string { return e.prefix }

// WriteTransactions counts the etcd transactions committed or tried.
func (e *Engine) WriteTransactions() uint64 { return e.writeTxns.Load() }

// Close stops the watch and closes the client.
func (e *Engine) Close() error {
	var err error
	e.closed.Do(func() {
		e.cancel()
		<-e.done
		// The commit marker is this engine's alone: leave none behind
		// (best effort; a killed process's stays, one small key).
		e.writeMu.Lock()
		if e.commitSeq > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			e.cli.Delete(ctx, e.key(e.commitKey))
			cancel()
		}
		e.writeMu.Unlock()
		err = e.cli.Close()
	})
	return err
}

// View runs fn over a snapshot of the mirror. It needs no round trip to
// the cluster, and answers while the cluster has no quorum.
func (e *Engine) View(fn func(kv.Tx) error) error {
	return fn(newTx(e, e.m.current(), false))
}

// Batch is Update: each call commits its own etcd transaction.
func (e *Engine) Batch(fn func(kv.Tx) error) error { return e.Update(fn) }

// Update runs fn over a snapshot plus fn's own writes and commits the
// writes if nothing fn read has changed since; otherwise it runs fn again
// over a newer snapshot. It returns after this instance's mirror (and
// its followers) applied the commit.
func (e *Engine) Update(fn func(kv.Tx) error) error {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		snap := e.m.current()
		if snap.intent != nil {
			// A large transaction's owner died (or is slow) between its
			// intent and its last chunk: finish it before reading.
			if err := e.rollForward(snap.intent); err != nil {
				return err
			}
			continue
		}
		tx := newTx(e, snap, true)
		if err := fn(tx); err != nil {
			return err
		}
		if tx.writes.Len() == 0 {
			return nil
		}
		err := e.commit(tx)
		if errors.Is(err, errNotCommitted) {
			continue // known not applied: run it again on what is there
		}
		var c *conflictError
		if errors.As(err, &c) {
			// Our snapshot was stale: catch up to at least the revision
			// that beat us, then run fn again.
			if err := e.waitPast(c.rev, snap.rev); err != nil {
				return err
			}
			continue
		}
		return err
	}
	return fmt.Errorf("etcd engine: gave up after %d attempts: %w", maxAttempts, kv.ErrConflict)
}

// Follow calls load over the current snapshot, then apply with the
// changes of every later revision that changed a bucket's records, in
// order, from the watch's goroutine. Neither may call Update: Update waits
// for the watch that would be waiting for them.
func (e *Engine) Follow(load func(kv.Tx) error, apply func([]kv.Change)) error {
	e.m.followMu.Lock()
	defer e.m.followMu.Unlock()
	if err := load(newTx(e, e.m.current(), false)); err != nil {
		return err
	}
	e.m.followers = append(e.m.followers, apply)
	return nil
}

// requestCtx bounds one etcd call.
func (e *Engine) requestCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
}

// key is the etcd key of a key relative to the prefix.
func (e *Engine) key(rel string) string { return e.prefix + rel }
