package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metalhall/metalhall/inventory/kv"
)

// conflictError: a compare failed; rev is the cluster's revision then.
type conflictError struct{ rev int64 }

func (c *conflictError) Error() string {
	return fmt.Sprintf("etcd engine: what the transaction read changed before revision %d", c.rev)
}

// wop is one write of a transaction's write set.
type wop struct {
	key string // relative to the prefix
	val []byte
	del bool
}

func (o wop) size() int { return len(o.key) + len(o.val) + 8 }

// ops is the write set of t, in key order: the overlay, plus the
// deletion marker of every bucket t deletes from.
func (t *tx) ops() []wop {
	var out []wop
	t.writes.Ascend(func(it item) bool {
		out = append(out, wop{key: it.key, val: it.val, del: it.del})
		return true
	})
	for b := range t.deleted {
		out = append(out, wop{key: delPrefix + b, val: []byte{}})
	}
	slices.SortFunc(out, func(a, b wop) int { return strings.Compare(a.key, b.key) })
	return out
}

func (e *Engine) etcdOps(ops []wop) []clientv3.Op {
	out := make([]clientv3.Op, len(ops))
	for i, o := range ops {
		if o.del {
			out[i] = clientv3.OpDelete(e.key(o.key))
		} else {
			out[i] = clientv3.OpPut(e.key(o.key), string(o.val))
		}
	}
	return out
}

// compares guard t's commit: nothing t read has changed since its
// snapshot and no intent is pending. When they are more than etcd takes
// in one transaction they are coalesced: per bucket first, then one
// compare over the whole prefix — always correct, less concurrent.
func (e *Engine) compares(t *tx) ([]clientv3.Cmp, int) {
	after := t.snap.rev + 1
	noIntent := clientv3.Compare(clientv3.ModRevision(e.key(intentKey)), "=", 0)
	rangeCmp := func(lo, hi string) clientv3.Cmp {
		return clientv3.Compare(clientv3.ModRevision(e.key(lo)), "<", after).WithRange(e.key(hi))
	}
	delCmp := func(b string) clientv3.Cmp {
		return clientv3.Compare(clientv3.ModRevision(e.key(delPrefix+b)), "<", after)
	}
	size := 0
	add := func(cmps []clientv3.Cmp, c clientv3.Cmp) []clientv3.Cmp {
		size += cmpSize(c)
		return append(cmps, c)
	}

	points := make([]string, 0, len(t.reads))
	for k := range t.reads {
		points = append(points, k)
	}
	slices.Sort(points)
	spans := map[string][][2]string{}
	for _, c := range t.cursors {
		if c.spanned {
			b, _, _ := splitRecord(c.lo)
			spans[b] = append(spans[b], [2]string{c.spanLo, c.spanHi})
		}
	}
	buckets := make([]string, 0, len(spans))
	for b := range spans {
		buckets = append(buckets, b)
	}
	slices.Sort(buckets)

	// Fine grained: a compare per key read and per span read.
	cmps := []clientv3.Cmp{noIntent}
	for _, k := range points {
		cmps = add(cmps, clientv3.Compare(clientv3.ModRevision(e.key(k)), "=", t.reads[k]))
	}
	for _, b := range buckets {
		for _, s := range mergeSpans(spans[b]) {
			cmps = add(cmps, rangeCmp(s[0], s[1]))
		}
		cmps = add(cmps, delCmp(b))
	}
	if len(cmps) <= e.cfg.MaxTxnOps {
		return cmps, size
	}

	// Per bucket: records read in a bucket become one range over it.
	size = 0
	cmps = []clientv3.Cmp{noIntent}
	whole := map[string]bool{}
	for _, b := range buckets {
		whole[b] = true
	}
	for _, k := range points {
		if b, _, ok := splitRecord(k); ok {
			whole[b] = true
			continue
		}
		cmps = add(cmps, clientv3.Compare(clientv3.ModRevision(e.key(k)), "=", t.reads[k]))
	}
	for _, b := range slices.Sorted(mapKeys(whole)) {
		cmps = add(cmps, rangeCmp(bucketLo(b), bucketHi(b)))
		cmps = add(cmps, delCmp(b))
	}
	if len(cmps) <= e.cfg.MaxTxnOps {
		return cmps, size
	}

	// The whole prefix, intent and deletion markers included: nothing
	// of this inventory changed since the snapshot.
	all := clientv3.Compare(clientv3.ModRevision(e.prefix), "<", after).WithRange(clientv3.GetPrefixRangeEnd(e.prefix))
	return []clientv3.Cmp{all}, cmpSize(all)
}

// cmpSize is about what c adds to a request.
func cmpSize(c clientv3.Cmp) int { return len(c.KeyBytes()) + len(c.GetCompare().RangeEnd) + 16 }

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// mergeSpans merges overlapping [lo, hi) spans.
func mergeSpans(s [][2]string) [][2]string {
	slices.SortFunc(s, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	out := s[:1]
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if x[0] <= last[1] {
			last[1] = max(last[1], x[1])
			continue
		}
		out = append(out, x)
	}
	return out
}

// txn runs one etcd transaction within the request timeout.
func (e *Engine) txn(cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	ctx, cancel := e.requestCtx()
	defer cancel()
	e.writeTxns.Add(1)
	return e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
}

// commit commits t's writes, in one etcd transaction when they fit, else
// through an intent.
func (e *Engine) commit(t *tx) error {
	ops := t.ops()
	cmps, cmpBytes := e.compares(t)
	opBytes := 0
	for _, o := range ops {
		opBytes += o.size()
	}
	// One operation is the commit marker's.
	if len(ops)+1 > e.cfg.MaxTxnOps || cmpBytes+opBytes > maxRequestBytes {
		return e.commitLarge(cmps, cmpBytes, ops, opBytes)
	}
	id, mark := e.nextCommit()
	resp, err := e.txn(cmps, append(e.etcdOps(ops), mark)...)
	if err != nil {
		rev, committed, rerr := e.resolveCommit(id, err)
		switch {
		case rerr != nil:
			return e.commitErr("commit", err)
		case committed:
			return e.waitApplied(rev)
		default:
			return errNotCommitted
		}
	}
	if !resp.Succeeded {
		return &conflictError{rev: resp.Header.Revision}
	}
	return e.waitApplied(resp.Header.Revision)
}

// errNotCommitted: a commit whose answer was lost is known not to have
// been applied, and never to be: Update runs the transaction again.
var errNotCommitted = errors.New("etcd engine: the commit was not applied")

// nextCommit numbers this engine's next commit and returns the put of
// its marker (writeMu is held).
func (e *Engine) nextCommit() (string, clientv3.Op) {
	e.commitSeq++
	id := strconv.FormatUint(e.commitSeq, 10)
	return id, clientv3.OpPut(e.key(e.commitKey), id)
}

// resolveCommit finds out whether the commit numbered id, whose request
// failed with err without an answer (a leader died, a member was cut
// off), was applied. A linearizable read is served by a leader that has
// committed an entry of its own term, so every entry the cluster will
// ever commit from before is committed by then: if the marker is not id,
// the commit never will be. It tries for one request timeout; then the
// outcome stays unknown (rerr) — the cluster has no quorum.
func (e *Engine) resolveCommit(id string, err error) (rev int64, committed bool, rerr error) {
	if !isUnavailable(err) {
		return 0, false, err // refused outright (too large...): not applied
	}
	deadline := time.Now().Add(e.cfg.RequestTimeout)
	for {
		ctx, cancel := e.requestCtx()
		resp, gerr := e.cli.Get(ctx, e.key(e.commitKey))
		cancel()
		if gerr == nil {
			if len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == id {
				e.log.Info("etcd engine: a commit whose answer was lost was applied", "revision", resp.Kvs[0].ModRevision, "err", err)
				return resp.Kvs[0].ModRevision, true, nil
			}
			e.log.Info("etcd engine: a commit whose answer was lost was not applied; running the transaction again", "err", err)
			return 0, false, nil
		}
		if time.Now().After(deadline) {
			return 0, false, gerr
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// commitErr words the failure of a transaction's commit: when the
// cluster did not answer, the outcome is not known for sure.
//
// A commit that timed out may have reached a leader that then lost its
// quorum. If that member leads again (its log is the longest), etcd
// applies it then, compares passing; if another member leads, it is
// dropped. The quorum test sees both. The caller may rely only on this:
// the write had not committed when Update returned.
func (e *Engine) commitErr(what string, err error) error {
	if isUnavailable(err) {
		return fmt.Errorf("etcd engine: %s: the etcd cluster at %s cannot commit (no quorum or unreachable); writes are refused and this one did not commit (etcd may still apply it when quorum returns, if a member had taken it): %w (%w)",
			what, e.endpoints, kv.ErrUnavailable, err)
	}
	return e.etcdErr(what, err)
}

// etcdErr words an etcd failure for the caller.
func (e *Engine) etcdErr(what string, err error) error {
	switch {
	case isUnavailable(err):
		return e.unavailable(what, err)
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("etcd engine: %s: the cluster at %s takes fewer operations per transaction than the %d this engine was told (MaxTxnOps): set it to the cluster's --max-txn-ops: %w: %w",
			what, e.endpoints, e.cfg.MaxTxnOps, kv.ErrTooLarge, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("etcd engine: %s: the cluster at %s refused the request as too large (its --max-request-bytes is below etcd's default 1.5 MiB): %w: %w",
			what, e.endpoints, kv.ErrTooLarge, err)
	}
	return fmt.Errorf("etcd engine: %s at %s: %w", what, e.endpoints, err)
}

// unavailable is the error of a call the cluster could not answer when
// nothing of the caller's was sent (loads, catching up, finishing another
// writer's intent).
func (e *Engine) unavailable(what string, err error) error {
	return fmt.Errorf("etcd engine: %s: the etcd cluster at %s cannot commit (no quorum or unreachable); writes are refused and nothing changed: %w (%w)",
		what, e.endpoints, kv.ErrUnavailable, err)
}

// isUnavailable: err says the cluster could not be reached or could not
// reach agreement in time.
func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ee rpctypes.EtcdError
	code := status.Code(err)
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded || code == codes.Canceled
}
