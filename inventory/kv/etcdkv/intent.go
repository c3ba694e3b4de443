package etcdkv

import (
	"encoding/binary"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metalhall/metalhall/inventory/kv"
)

// A transaction whose writes do not fit one etcd request (more than
// MaxTxnOps operations, or too many bytes: a 40-machine rack import)
// commits through an intent:
//
//  1. one etcd transaction, guarded by the read set's compares, writes the
//     whole write set to the key i: this is the commit point;
//  2. chunks of at most MaxTxnOps writes, each guarded by "i is still the
//     intent of revision R", apply it;
//  3. i is deleted.
//
// While i exists every mirror lays its write set over its snapshots, so
// readers see the transaction whole or not at all, and every writer's
// compares fail on it. A writer that finds an intent left by one that died
// before step 3 does steps 2 and 3 itself first; they are idempotent.

// intent is a pending large transaction.
type intent struct {
	rev  int64 // the revision that wrote it
	ops  []wop
	keys map[string]struct{}
	err  error // the value did not decode
}

func (in *intent) has(rel string) bool {
	_, ok := in.keys[rel]
	return ok
}

const intentMagic = "mhkv-intent-1\n"

func encodeIntent(ops []wop) []byte {
	n := len(intentMagic) + binary.MaxVarintLen64
	for _, o := range ops {
		n += 1 + 2*binary.MaxVarintLen64 + len(o.key) + len(o.val)
	}
	b := make([]byte, 0, n)
	b = append(b, intentMagic...)
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, o := range ops {
		if o.del {
			b = append(b, 'd')
		} else {
			b = append(b, 'p')
		}
		b = binary.AppendUvarint(b, uint64(len(o.key)))
		b = append(b, o.key...)
		if !o.del {
			b = binary.AppendUvarint(b, uint64(len(o.val)))
			b = append(b, o.val...)
		}
	}
	return b
}

var errBadIntent = errors.New("not an intent this engine wrote")

func decodeIntent(b []byte, rev int64) *intent {
	in := &intent{rev: rev, keys: map[string]struct{}{}}
	in.ops, in.err = parseIntent(b)
	for _, o := range in.ops {
		in.keys[o.key] = struct{}{}
	}
	return in
}

func parseIntent(b []byte) ([]wop, error) {
	if len(b) < len(intentMagic) || string(b[:len(intentMagic)]) != intentMagic {
		return nil, errBadIntent
	}
	b = b[len(intentMagic):]
	bytesOf := func() ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, false
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, true
	}
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) {
		return nil, errBadIntent
	}
	b = b[k:]
	ops := make([]wop, 0, count)
	for range count {
		if len(b) == 0 {
			return nil, errBadIntent
		}
		op := wop{del: b[0] == 'd'}
		if b[0] != 'd' && b[0] != 'p' {
			return nil, errBadIntent
		}
		b = b[1:]
		key, ok := bytesOf()
		if !ok {
			return nil, errBadIntent
		}
		op.key = string(key)
		if !op.del {
			if op.val, ok = bytesOf(); !ok {
				return nil, errBadIntent
			}
		}
		ops = append(ops, op)
	}
	if len(b) != 0 {
		return nil, errBadIntent
	}
	return ops, nil
}

// commitLarge commits ops through an intent.
func (e *Engine) commitLarge(cmps []clientv3.Cmp, cmpBytes int, ops []wop, opBytes int) error {
	enc := encodeIntent(ops)
	if len(enc)+cmpBytes > maxRequestBytes {
		return fmt.Errorf("etcd engine: the transaction writes %d keys in %d bytes (%.2f MiB); a transaction commits in one etcd request, at most %.2f MiB here: split the change into smaller transactions: %w",
			len(ops), opBytes, float64(opBytes)/(1<<20), float64(maxRequestBytes)/(1<<20), kv.ErrTooLarge)
	}
	id, mark := e.nextCommit()
	resp, err := e.txn(cmps, clientv3.OpPut(e.key(intentKey), string(enc)), mark)
	var irev int64
	switch {
	case err != nil:
		rev, committed, rerr := e.resolveCommit(id, err)
		if rerr != nil {
			return e.commitErr("commit the intent of a large transaction", err)
		}
		if !committed {
			return errNotCommitted
		}
		irev = rev
	case !resp.Succeeded:
		return &conflictError{rev: resp.Header.Revision}
	default:
		irev = resp.Header.Revision
	}
	in := &intent{rev: irev, ops: ops}
	if e.hookAfterIntent != nil {
		if err := e.hookAfterIntent(); err != nil {
			return err
		}
	}
	// Committed: every reader sees the transaction through the intent,
	// and the next writer finishes applying it if this one cannot.
	rev, done, err := e.applyIntent(in)
	if err != nil {
		e.log.Warn("etcd engine: a large transaction committed; applying it failed, the next write finishes it", "revision", in.rev, "err", err)
		return e.waitApplied(in.rev)
	}
	return e.waitIntent(in, rev, done)
}

// rollForward finishes an intent another writer left.
func (e *Engine) rollForward(in *intent) error {
	if in.err != nil {
		return fmt.Errorf("etcd engine: the key %s (revision %d) holds no intent this engine can read (%v); every write is refused until it is removed: look at it with etcdctl, then delete it",
			e.key(intentKey), in.rev, in.err)
	}
	e.log.Info("etcd engine: finishing a large transaction its writer left", "revision", in.rev, "writes", len(in.ops))
	rev, done, err := e.applyIntent(in)
	if err != nil {
		return err
	}
	return e.waitIntent(in, rev, done)
}

// waitIntent waits until the mirror has seen in finished: by this
// instance at rev (done), or by another before rev.
func (e *Engine) waitIntent(in *intent, rev int64, done bool) error {
	if done {
		return e.waitApplied(rev)
	}
	return e.waitPast(rev, in.rev)
}

// applyIntent writes in's chunks and deletes it. It returns the revision
// to wait for: its own deletion of the intent (done), or the revision at
// which it found the intent gone (another writer finished it).
func (e *Engine) applyIntent(in *intent) (int64, bool, error) {
	guard := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(e.key(intentKey)), "=", in.rev)}
	for _, chunk := range e.chunks(in.ops) {
		resp, err := e.txn(guard, e.etcdOps(chunk)...)
		if err != nil {
			return 0, false, e.etcdErr("apply a large transaction", err)
		}
		if !resp.Succeeded {
			return resp.Header.Revision, false, nil
		}
	}
	resp, err := e.txn(guard, clientv3.OpDelete(e.key(intentKey)))
	if err != nil {
		return 0, false, e.etcdErr("finish a large transaction", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// chunks splits ops into etcd transactions of at most MaxTxnOps writes
// and maxRequestBytes.
func (e *Engine) chunks(ops []wop) [][]wop {
	var out [][]wop
	start, size := 0, 0
	for i, o := range ops {
		if i > start && (i-start == e.cfg.MaxTxnOps || size+o.size() > maxRequestBytes) {
			out = append(out, ops[start:i])
			start, size = i, 0
		}
		size += o.size()
	}
	if start < len(ops) {
		out = append(out, ops[start:])
	}
	return out
}
