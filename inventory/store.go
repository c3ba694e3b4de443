package inventory

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this code writes. A database with a higher
// version was written by a newer metalhall and is refused rather than
// misread.
const SchemaVersion = 1

var (
	bMeta       = []byte("meta")
	bSites      = []byte("sites")
	bHalls      = []byte("halls")
	bPhases     = []byte("phases") // hall \x00 number(4) → Phase
	bRacks      = []byte("racks")
	bRackUsage  = []byte("rack_usage") // rack → RackUsage (kept with every machine write)
	bMachines   = []byte("machines")
	bSecrets    = []byte("secrets") // ref → sealed bytes
	bSubnets    = []byte("subnets")
	bTenants    = []byte("tenants")
	bEvents     = []byte("events")            // seq(8) → Event
	bIdxMAC     = []byte("idx_mac")           // mac(6) → machine
	bIdxBMC     = []byte("idx_bmc")           // bmc address → machine
	bIdxIP      = []byte("idx_ip")            // reserved ip → machine
	bIdxRackM   = []byte("idx_rack")          // rack \x00 machine → unit(2) height(2)
	bIdxPhaseR  = []byte("idx_phase_rack")    // hall \x00 phase(4) rack → nil
	bIdxSubject = []byte("idx_event_subject") // subject \x00 seq(8) → nil

	keySchema            = []byte("schema_version")
	keyEventIndexChecked = []byte("event_index_checked")
	keyTenancies         = []byte("tenancies_given")

	allBuckets = [][]byte{bMeta, bSites, bHalls, bPhases, bRacks, bRackUsage, bMachines, bSecrets,
		bSubnets, bTenants, bEvents, bIdxMAC, bIdxBMC, bIdxIP, bIdxRackM, bIdxPhaseR, bIdxSubject}
)

// extraBuckets lets other files of this package register their buckets
// (tokens, images, jobs) next to where they are used.
var extraBuckets [][]byte

// Options tune Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to let go of
	// the file. Default 1s: a second metalhall fails fast, never hangs.
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only for benchmarks and tests.
	NoSync bool
	// Now is the clock; tests may fix it.
	Now func() time.Time
}

// Store is the inventory over one bbolt file. It is safe for concurrent use.
type Store struct {
	db  *bolt.DB
	now func() time.Time

	// macs mirrors idx_mac in memory for the DHCP hot path: a lookup per
	// packet must not open a transaction. It is rebuilt at Open and changed
	// only from OnCommit hooks, so it never shows uncommitted state.
	macMu sync.RWMutex
	macs  map[[6]byte]MACEntry
}

// MACEntry is what the netboot path needs to know about a MAC.
type MACEntry struct {
	Machine string
	IP      string
}

// Open opens (creating if needed) the inventory database at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w: stop the other one first, or use another --data-dir", path, ErrInUse)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db, now: opts.Now, macs: make(map[[6]byte]MACEntry)}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range append(allBuckets, extraBuckets...) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := bkt(tx, bMeta)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 4 {
				return fmt.Errorf("schema version record is corrupt (%d bytes)", len(v))
			}
			if got := binary.BigEndian.Uint32(v); got > SchemaVersion {
				return fmt.Errorf("%w: schema version %d, this metalhall knows up to %d; upgrade metalhall", ErrNewerStore, got, SchemaVersion)
			}
		}
		if err := meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion)); err != nil {
			return err
		}
		// Subjects are checked before they are written now, so the event
		// index needs repairing once, not on every start.
		if meta.Get(keyEventIndexChecked) == nil {
			if _, err := repairEventIndex(tx); err != nil {
				return fmt.Errorf("repairing the event index: %w", err)
			}
			if err := meta.Put(keyEventIndexChecked, []byte{1}); err != nil {
				return err
			}
		}
		if meta.Get(keyTenancies) == nil {
			if err := s.migrateTenancies(tx); err != nil {
				return fmt.Errorf("giving machines their tenancies: %w", err)
			}
			if err := meta.Put(keyTenancies, []byte{1}); err != nil {
				return err
			}
		}
		// Rebuild the in-memory MAC index from the committed one.
		machines := bkt(tx, bMachines)
		return bkt(tx, bIdxMAC).ForEach(func(k, v []byte) error {
			var m Machine
			if err := getJSON(machines, v, &m); err != nil {
				return fmt.Errorf("mac index points at %q: %w", v, err)
			}
			s.macs[[6]byte(k)] = MACEntry{Machine: m.Name, IP: m.IP}
			return nil
		})
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

// Backup writes a consistent copy of the whole database to w while the
// service keeps running. The copy is itself a database file: start
// metalhall on a data dir holding it to restore.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// BackupFile writes a backup to path atomically (temp file, fsync, rename).
func (s *Store) BackupFile(path string) (int64, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := s.Backup(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("backup to %s: %w", path, err)
	}
	return n, nil
}

// LookupMAC is the DHCP hot path: which machine owns this MAC, and its
// reserved address. It takes no transaction and allocates nothing.
func (s *Store) LookupMAC(mac []byte) (MACEntry, bool) {
	if len(mac) != 6 {
		return MACEntry{}, false
	}
	s.macMu.RLock()
	e, ok := s.macs[[6]byte(mac)]
	s.macMu.RUnlock()
	return e, ok
}

// macChange is applied to the in-memory index after its transaction commits.
type macChange struct {
	key   [6]byte
	entry MACEntry
	del   bool
}

func (s *Store) applyMACChanges(ch []macChange) {
	s.macMu.Lock()
	for _, c := range ch {
		if c.del {
			delete(s.macs, c.key)
		} else {
			s.macs[c.key] = c.entry
		}
	}
	s.macMu.Unlock()
}

// update runs fn in a write transaction.
func (s *Store) update(fn func(tx *bolt.Tx) error) error { return s.db.Update(fn) }

// view runs fn in a read transaction.
func (s *Store) view(fn func(tx *bolt.Tx) error) error { return s.db.View(fn) }

func getJSON(b *bolt.Bucket, key []byte, v any) error {
	data := b.Get(key)
	if data == nil {
		return ErrNotFound
	}
	return json.Unmarshal(data, v)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// get loads one record or returns a NotFoundError naming it.
func get[T any](tx *bolt.Tx, bucket []byte, kind, name string) (*T, error) {
	var v T
	if err := getJSON(bkt(tx, bucket), []byte(name), &v); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, &NotFoundError{Kind: kind, Name: name}
		}
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return &v, nil
}

// list decodes every record of a bucket, in key order.
func list[T any](tx *bolt.Tx, bucket []byte, keep func(*T) bool) ([]T, error) {
	var out []T
	err := bkt(tx, bucket).ForEach(func(k, v []byte) error {
		var r T
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%s %q: %w", bucket, k, err)
		}
		if keep == nil || keep(&r) {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

func exists(tx *bolt.Tx, bucket []byte, name string) bool {
	return bkt(tx, bucket).Get([]byte(name)) != nil
}

func phaseKey(hall string, number int) []byte {
	k := append([]byte(hall), 0)
	return binary.BigEndian.AppendUint32(k, uint32(number))
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// bkt returns a bucket of tx. In a write transaction it packs pages to 90%
// instead of bbolt's 50%: most writes append names in order (imports,
// events), and half-empty pages would double the file for nothing.
func bkt(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	if tx.Writable() {
		b.FillPercent = 0.9
	}
	return b
}
