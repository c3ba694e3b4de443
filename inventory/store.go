package inventory

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalhall/metalhall/internal/atomicfile"
	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/boltkv"
)

// SchemaVersion is the layout this code writes. A database with a higher
// version was written by a newer metalhall and is refused rather than
// misread.
//
//	1  the first
//	2  inspections apart from the machine records (inspections.go)
const SchemaVersion = 2

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

	// gate is a crash test's hold point inside write transactions
	// (testgate.go); the package's own tests set it, builds with the
	// metalhall_testgates tag default it to the FIFO gate.
	gate func(point string)
}

// Store is the inventory over one kv engine: a bbolt file (Open) or an
// engine other instances share (OpenEngine). It is safe for concurrent use.
type Store struct {
	db   kv.Engine
	now  func() time.Time
	gate func(point string) // see Options.gate

	// boot is the in-memory view of the boot path (MACs, reservations,
	// subnets, active jobs): a DHCP packet must not open a transaction. It
	// is rebuilt at Open and changed only after a commit (see write, and
	// follow.go for engines other instances write to).
	boot *BootView
	// follows is set when the engine is a kv.Follower: the views are kept
	// from its change stream, which carries this store's commits and
	// other instances' alike, and never from a write's own change set.
	follows bool
	// events wakes followers of the event log after each commit that
	// appends to it (EventsCommitted).
	events *eventFeed
	// applyMu orders the view's updates as their transactions committed:
	// a writer takes it inside its transaction (under bbolt's writer lock)
	// and lets go once its changes are applied.
	applyMu sync.Mutex
	jobQ    jobQueue // group commit of job updates (and of batch)

	// hold is the store-wide hold on BMC work (hold.go), nil when none:
	// read on every BMC call, so kept in memory.
	hold atomic.Pointer[Hold]

	// claimQ is the group commit of dynamic lease claims (leases.go).
	claimQ claimQueue

	// causes counts writes and commits by call site (writecause.go).
	causes writeCauses

	// jobs and machines remember the records they decoded, with their
	// bytes, so a read of an unchanged record copies instead of decoding
	// (decodememo.go).
	jobs     *decodeMemo[Job]
	machines *decodeMemo[Machine]
}

// MACEntry is what the netboot path needs to know about a MAC.
type MACEntry struct {
	Machine string
	IP      string
}

// Open opens (creating if needed) the inventory database at path: a
// bbolt file, the embedded default.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	e, err := boltkv.Open(path, boltkv.Options{LockTimeout: opts.LockTimeout, NoSync: opts.NoSync})
	if err != nil {
		if errors.Is(err, boltkv.ErrLocked) {
			return nil, fmt.Errorf("open %s: %w: stop the other one first, or use another data directory", path, ErrInUse)
		}
		return nil, err // boltkv names the file
	}
	s, err := OpenEngine(e, opts)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// OpenEngine opens the inventory kept by e: it creates what is missing,
// refuses a newer schema, runs the migrations and loads the in-memory
// views. When e is a kv.Follower the views follow its change stream
// (other instances write to it too). On success the store owns e and
// Store.Close closes it; on failure e is the caller's to close.
// opts.LockTimeout and opts.NoSync are the engine's business and are not
// used here.
func OpenEngine(e kv.Engine, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{db: e, now: opts.Now, gate: opts.gate, boot: newBootView(), events: newEventFeed(0),
		jobs: newDecodeMemo(memoEntries, cloneJob), machines: newDecodeMemo(memoEntries, deepCloneMachine)}
	if s.gate == nil {
		s.gate = defaultGate
	}
	// A store a migration did not finish copying into is refused: it
	// holds part of an inventory.
	if err := kv.CheckNoMigration(e); err != nil {
		return nil, err
	}
	if err := s.init(); err != nil {
		return nil, err
	}
	// Before the migrations below that rewrite machine records: a record
	// decoded into today's Machine loses the report it still holds.
	if err := s.moveInspections(); err != nil {
		return nil, fmt.Errorf("moving inspections out of the machine records: %w", err)
	}
	if err := s.migrate(); err != nil {
		return nil, err
	}
	if f, ok := e.(kv.Follower); ok {
		s.follows = true
		if err := f.Follow(s.load, s.applyCommit); err != nil {
			return nil, fmt.Errorf("following the store's changes: %w", err)
		}
		return s, nil
	}
	// Nobody else writes to this engine: what is committed now is what
	// the views start from, and write keeps them from here on.
	if err := s.view(s.load); err != nil {
		return nil, err
	}
	return s, nil
}

// init creates the buckets and checks the schema, and writes this one:
// an older metalhall refuses the store from here on, even before the
// migrations finish. It may run more than once (an engine retries a
// conflicting write): it keeps nothing outside the transaction.
func (s *Store) init() error {
	return s.db.Update(func(tx kv.Tx) error {
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
		return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion))
	})
}

// migrate runs the migrations that fit one transaction, each once (a
// flag in meta says it ran). Like init it may run more than once.
func (s *Store) migrate() error {
	return s.db.Update(func(tx kv.Tx) error {
		meta := bkt(tx, bMeta)
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
		return nil
	})
}

// load sets the in-memory views (the hold, the boot view, the event
// feed's newest event) from what tx sees. A Follower may call it again to
// start over (its stream was cut): the boot view is then replaced whole.
func (s *Store) load(tx kv.Tx) error {
	h, err := loadHold(tx)
	if err != nil {
		return err
	}
	var vc viewChanges
	if err := loadView(tx, &vc); err != nil {
		return err
	}
	s.hold.Store(h)
	s.boot.replace(&vc)
	s.events.committed(bkt(tx, bEvents).Sequence())
	return nil
}

// loadView collects everything the boot view shows: every machine, every
// unfinished job, every subnet.
func loadView(tx kv.Tx, vc *viewChanges) error {
	ms, err := list[Machine](tx, bMachines, nil)
	if err != nil {
		return err
	}
	for i := range ms {
		vc.machines = append(vc.machines, &ms[i])
	}
	err = bkt(tx, bActiveJob).ForEach(func(_, id []byte) error {
		j, err := get[Job](tx, bJobs, "job", string(id))
		if err != nil {
			return err
		}
		vc.jobs = append(vc.jobs, j)
		return nil
	})
	if err != nil {
		return err
	}
	vc.subnets, err = list[Subnet](tx, bSubnets, nil)
	return err
}

// Close stores the job updates still queued (UpdateJobBehind) and closes
// the database.
func (s *Store) Close() error {
	s.FlushJobUpdates()
	return s.db.Close()
}

// Path is the database file, or "" when the engine is not a file.
func (s *Store) Path() string {
	if p, ok := s.db.(interface{ Path() string }); ok {
		return p.Path()
	}
	return ""
}

// Backup writes a consistent copy of the whole database to w while the
// service keeps running. The copy is itself a database file: start
// metalhall on a data dir holding it to restore.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.view(func(tx kv.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Snapshot is Backup that also returns the image catalogue as the copy
// holds it, read in the same transaction: a backup that bundles the
// blobs bundles exactly those the copied catalogue names.
func (s *Store) Snapshot(w io.Writer) (int64, []Image, error) {
	var n int64
	var imgs []Image
	err := s.view(func(tx kv.Tx) error {
		var err error
		if imgs, err = list[Image](tx, bImages, nil); err != nil {
			return err
		}
		n, err = tx.WriteTo(w)
		return err
	})
	return n, imgs, err
}

// BackupFile writes a backup to path atomically (temp file, fsync,
// rename, fsync of the directory).
func (s *Store) BackupFile(path string) (int64, error) {
	var n int64
	err := atomicfile.Write(path, atomicfile.Options{Perm: 0o600}, func(w io.Writer) error {
		var err error
		n, err = s.Backup(w)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}

// LookupMAC is the DHCP hot path: which machine owns this MAC, and its
// reserved address. It takes no transaction and allocates nothing.
func (s *Store) LookupMAC(mac []byte) (MACEntry, bool) {
	if len(mac) != 6 {
		return MACEntry{}, false
	}
	s.boot.mu.RLock()
	bm := s.boot.byMAC[[6]byte(mac)]
	s.boot.mu.RUnlock()
	if bm == nil {
		return MACEntry{}, false
	}
	return MACEntry{Machine: bm.entry.Machine, IP: bm.ipText}, true
}

// BootView is the in-memory view the boot path reads.
func (s *Store) BootView() *BootView { return s.boot }

// write runs fn in a write transaction and, once it has committed,
// publishes what fn collected to the boot view, in commit order. fn may
// run more than once (the engine retries a conflicting write): vc starts
// empty each time, and whatever else fn sets outside the transaction it
// must set afresh.
//
// On a Follower engine the views hear of the commit from its change
// stream instead (applyCommit), in the engine's commit order among every
// instance's writes: applying vc here too could put this write's change
// after a newer one another instance made.
//
// On any other engine the changes are applied in commit order because it
// commits one writer at a time (bbolt): the lock taken inside the
// transaction passes from writer to writer in that order. An engine that
// commits writers concurrently must be a Follower.
func (s *Store) write(fn func(tx kv.Tx, vc *viewChanges) error) error {
	var vc viewChanges
	if s.follows {
		return s.update(func(tx kv.Tx) error {
			vc.reset()
			return fn(tx, &vc)
		})
	}
	locked := false
	err := s.update(func(tx kv.Tx) error {
		if locked {
			// A retry: the last run did not commit, and its turn to
			// apply is not this one's.
			s.applyMu.Unlock()
			locked = false
		}
		vc.reset()
		if err := fn(tx, &vc); err != nil {
			return err
		}
		if !vc.empty() {
			// Still under bbolt's writer lock: the next writer to commit
			// applies after this one.
			s.applyMu.Lock()
			locked = true
		}
		return nil
	})
	if locked {
		if err == nil {
			s.boot.apply(&vc)
		}
		s.applyMu.Unlock()
	}
	if err == nil && vc.lastEvent > 0 {
		s.events.committed(vc.lastEvent)
	}
	return err
}

// eventsAppended tells the event feed of a commit outside write that
// appended events up to seq; on a Follower engine the change stream
// tells it.
func (s *Store) eventsAppended(seq uint64) {
	if !s.follows && seq > 0 {
		s.events.committed(seq)
	}
}

// update runs fn in a write transaction.
func (s *Store) update(fn func(tx kv.Tx) error) error {
	s.countCommit()
	return s.db.Update(fn)
}

// batch runs fn in a write transaction shared with concurrent callers:
// the group commit of job updates (RecordJobUpdate), so a BMC status, an
// event or a token's last use shares its commit with the jobs' writes.
// fn must refuse (not found) before it writes. It runs once per try: on an
// engine that retries a conflicting commit (etcd) again, so it keeps
// nothing outside the transaction.
func (s *Store) batch(fn func(tx kv.Tx) error) error {
	u := &jobUpdate{txfn: func(tx kv.Tx, _ *viewChanges) error { return fn(tx) }, done: make(chan struct{})}
	s.queueJobUpdate(u, true)
	return u.err
}

// WriteTransactions is the number of write transactions since Open, as
// the engine counts them (a shared Batch transaction counts once), so a
// bench can report what one provisioned machine costs the writer.
func (s *Store) WriteTransactions() uint64 { return s.db.WriteTransactions() }

// view runs fn in a read transaction.
func (s *Store) view(fn func(tx kv.Tx) error) error { return s.db.View(fn) }

func getJSON(b kv.Bucket, key []byte, v any) error {
	data := b.Get(key)
	if data == nil {
		return ErrNotFound
	}
	return json.Unmarshal(data, v)
}

func putJSON(b kv.Bucket, key []byte, v any) error {
	_, err := putJSONData(b, key, v)
	return err
}

// putJSONData is putJSON, and returns the bytes it stored.
func putJSONData(b kv.Bucket, key []byte, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return data, b.Put(key, data)
}

// get loads one record or returns a NotFoundError naming it.
func get[T any](tx kv.Tx, bucket []byte, kind, name string) (*T, error) {
	var v T
	if err := getJSON(bkt(tx, bucket), []byte(name), &v); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, &NotFoundError{Kind: kind, Name: name}
		}
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return &v, nil
}

// getJob loads one job, through the decode memo.
func (s *Store) getJob(tx kv.Tx, id string) (*Job, error) {
	return getMemo(tx, s.jobs, bJobs, "job", id)
}

// getMachine loads one machine, through the decode memo.
func (s *Store) getMachine(tx kv.Tx, name string) (*Machine, error) {
	return getMemo(tx, s.machines, bMachines, "machine", name)
}

// getMemo is get through a decode memo.
func getMemo[T any](tx kv.Tx, memo *decodeMemo[T], bucket []byte, kind, name string) (*T, error) {
	data := bkt(tx, bucket).Get([]byte(name))
	if data == nil {
		return nil, &NotFoundError{Kind: kind, Name: name}
	}
	v, err := memo.decode(name, data)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return v, nil
}

// list decodes every record of a bucket, in key order.
func list[T any](tx kv.Tx, bucket []byte, keep func(*T) bool) ([]T, error) {
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

func exists(tx kv.Tx, bucket []byte, name string) bool {
	return bkt(tx, bucket).Get([]byte(name)) != nil
}

func phaseKey(hall string, number int) []byte {
	k := append([]byte(hall), 0)
	return binary.BigEndian.AppendUint32(k, uint32(number))
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// bkt returns a bucket of tx; every bucket exists from Open on. (The
// bbolt engine packs pages to 90% in write transactions.)
func bkt(tx kv.Tx, name []byte) kv.Bucket { return tx.Bucket(name) }
