package inventory

import (
	"cmp"
	"iter"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// BootView is the inventory as the boot path sees it, in memory: MAC →
// machine, its reserved address and subnet, and its active job; the
// subnets with their dynamic ranges; and the queue of unfinished jobs.
// It is built at Open and changed only after a transaction commits (from
// the change set the transaction collected), so it never shows
// uncommitted state and a DHCP packet never opens a transaction.
//
// It knows nothing of bbolt: a storage engine feeds it with viewChanges,
// so another engine can keep the same view.
type BootView struct {
	mu      sync.RWMutex
	byMAC   map[[6]byte]*bootMachine
	byName  map[string]*bootMachine
	byIP    map[netip.Addr]*bootMachine
	subnets []BootSubnet // replaced whole, never changed in place
	queue   []QueuedJob  // unfinished jobs, oldest first

	// waiters have a lock of their own: every wait for a job takes it,
	// and were it mu, each would be a writer that holds up the DHCP
	// workers' lookups (a reader queues behind a waiting writer).
	wmu     sync.Mutex
	waiters map[string]chan struct{}

	subnetGen atomic.Uint64 // bumped on every subnet change
}

// bootMachine is one machine's published entry. It is never changed after
// it is published: a change builds a new one, so readers hold it without
// the lock.
type bootMachine struct {
	entry  BootEntry
	macs   []net.HardwareAddr
	ipText string // the address as stored, for LookupMAC
}

// BootEntry is what the boot path needs to know about one MAC.
type BootEntry struct {
	Machine string
	State   MachineState
	IP      netip.Addr // reserved address; invalid: none
	Subnet  BootSubnet // the subnet holding IP; zero: none
	Job     BootJob    // the active job; zero ID: none
}

// BootJob is the part of a machine's active job the boot path needs.
type BootJob struct {
	ID        string
	Kind      JobKind
	Step      string // the current step ("" when every step is done)
	Cancelled bool   // cancellation was asked for
}

// BootSubnet is a subnet parsed once for the boot path. Its DNS slice is
// shared: read it, never change it.
type BootSubnet struct {
	Name       string
	Prefix     netip.Prefix
	Gateway    netip.Addr   // invalid: none
	DNS        []netip.Addr // shared, read only
	RangeFirst netip.Addr   // dynamic range, inclusive; invalid: none
	RangeLast  netip.Addr
}

// QueuedJob is an unfinished job as the scheduler sees it.
type QueuedJob struct {
	ID      string
	Machine string
	Rack    string
	Kind    JobKind
}

func newBootView() *BootView {
	return &BootView{
		byMAC:   make(map[[6]byte]*bootMachine),
		byName:  make(map[string]*bootMachine),
		byIP:    make(map[netip.Addr]*bootMachine),
		waiters: make(map[string]chan struct{}),
	}
}

// Lookup returns what the boot path needs about mac, with the subnet of
// its reservation: one lookup answers a whole DHCP packet. It takes no
// transaction and allocates nothing.
func (v *BootView) Lookup(mac []byte) (BootEntry, bool) {
	if len(mac) != 6 {
		return BootEntry{}, false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	bm := v.byMAC[[6]byte(mac)]
	if bm == nil {
		return BootEntry{}, false
	}
	e := bm.entry
	if e.IP.IsValid() {
		e.Subnet, _ = v.subnetOf(e.IP)
	}
	return e, true
}

// Owner returns the first MAC of the machine an address is reserved for.
func (v *BootView) Owner(ip netip.Addr) (net.HardwareAddr, string, bool) {
	v.mu.RLock()
	bm := v.byIP[ip]
	v.mu.RUnlock()
	if bm == nil || len(bm.macs) == 0 {
		return nil, "", false
	}
	return slices.Clone(bm.macs[0]), bm.entry.Machine, true
}

// Subnets returns the subnets, by name, and a generation number that
// changes whenever they do; the slice is shared: do not change it.
func (v *BootView) Subnets() ([]BootSubnet, uint64) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.subnets, v.subnetGen.Load()
}

// SubnetGeneration changes whenever a subnet is created or changed; a
// reader that keeps derived state compares it, without taking the lock.
func (v *BootView) SubnetGeneration() uint64 { return v.subnetGen.Load() }

func (v *BootView) subnetOf(ip netip.Addr) (BootSubnet, bool) {
	for _, sn := range v.subnets {
		if sn.Prefix.Contains(ip) {
			return sn, true
		}
	}
	return BootSubnet{}, false
}

// Queue returns the unfinished jobs, oldest first (the order the
// scheduler runs them in). The slice is the caller's.
func (v *BootView) Queue() []QueuedJob {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Clone(v.queue)
}

// Queued yields the unfinished jobs, oldest first, without copying the
// queue; the view's read lock is held while the loop runs, so keep its
// body short and do not write to the inventory from it.
func (v *BootView) Queued() iter.Seq[QueuedJob] {
	return func(yield func(QueuedJob) bool) {
		v.mu.RLock()
		defer v.mu.RUnlock()
		for _, q := range v.queue {
			if !yield(q) {
				return
			}
		}
	}
}

// JobChanged returns a channel closed after the next commit that changes
// job id or its machine. Take it before reading the job, then wait on it:
// no change can slip between the read and the wait.
func (v *BootView) JobChanged(id string) <-chan struct{} {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	ch, ok := v.waiters[id]
	if !ok {
		ch = make(chan struct{})
		v.waiters[id] = ch
	}
	return ch
}

// viewChanges is what one transaction changed that the view shows. It is
// collected inside the transaction and applied after the commit; a
// transaction function that may run twice (DB.Batch) resets it first.
type viewChanges struct {
	machines []*Machine // stored records whose boot fields are new or changed
	touched  []string   // machines written at all (their jobs' waiters wake)
	deleted  []string   // machines removed
	jobs     []*Job     // jobs written; a finished one leaves the queue and its machine
	subnets  []Subnet
	// lastEvent is the newest event the transaction appended (0: none):
	// not the boot view's, the event feed's (EventsCommitted).
	lastEvent uint64
	// subnetsDeleted are subnets removed, by name.
	subnetsDeleted []string
}

func (c *viewChanges) reset() { *c = viewChanges{} }

func (c *viewChanges) empty() bool {
	return len(c.machines) == 0 && len(c.touched) == 0 && len(c.deleted) == 0 && len(c.jobs) == 0 && len(c.subnets) == 0 && len(c.subnetsDeleted) == 0
}

// apply publishes a committed change set. Machines go before jobs: a
// transaction that changes both (a job's start or end) leaves the job's
// mark on the machine's new entry.
func (v *BootView) apply(c *viewChanges) {
	if c == nil || c.empty() {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, name := range c.deleted {
		v.notifyMachine(name)
		if old := v.byName[name]; old != nil {
			v.unpublish(old)
			delete(v.byName, name)
		}
	}
	for _, m := range c.machines {
		bm := &bootMachine{entry: BootEntry{Machine: m.Name, State: m.State}, ipText: m.IP}
		if a, err := netip.ParseAddr(m.IP); err == nil {
			bm.entry.IP = a
		}
		for _, s := range m.MACs {
			if hw, err := net.ParseMAC(s); err == nil && len(hw) == 6 {
				bm.macs = append(bm.macs, hw)
			}
		}
		old := v.byName[m.Name]
		if old != nil {
			bm.entry.Job = old.entry.Job
			v.unpublish(old)
		}
		v.publish(bm)
	}
	for _, name := range c.touched {
		v.notifyMachine(name)
	}
	for _, j := range c.jobs {
		v.applyJob(j)
	}
	if len(c.subnets) > 0 || len(c.subnetsDeleted) > 0 {
		subs := slices.DeleteFunc(slices.Clone(v.subnets), func(o BootSubnet) bool { return slices.Contains(c.subnetsDeleted, o.Name) })
		for _, sn := range c.subnets {
			bs := toBootSubnet(sn)
			if i := slices.IndexFunc(subs, func(o BootSubnet) bool { return o.Name == bs.Name }); i >= 0 {
				subs[i] = bs
			} else {
				subs = append(subs, bs)
			}
		}
		slices.SortFunc(subs, func(a, b BootSubnet) int { return cmp.Compare(a.Name, b.Name) })
		v.subnets = subs
		v.subnetGen.Add(1)
	}
}

// replace makes the view show exactly c, a whole load: at Open, and when
// a Follower engine starts its stream over. The new maps are built aside
// and swapped in, so a reader never sees an empty view; every job's
// waiters wake, since anything may have changed.
func (v *BootView) replace(c *viewChanges) {
	fresh := newBootView()
	fresh.apply(c)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.byMAC, v.byName, v.byIP, v.queue = fresh.byMAC, fresh.byName, fresh.byIP, fresh.queue
	if len(v.subnets) > 0 || len(fresh.subnets) > 0 {
		v.subnets = fresh.subnets
		v.subnetGen.Add(1)
	}
	v.wmu.Lock()
	defer v.wmu.Unlock()
	for id, ch := range v.waiters {
		close(ch)
		delete(v.waiters, id)
	}
}

func (v *BootView) applyJob(j *Job) {
	i, found := slices.BinarySearchFunc(v.queue, j.ID, func(q QueuedJob, id string) int { return cmp.Compare(q.ID, id) })
	if j.State.Finished() {
		if found {
			v.queue = slices.Delete(v.queue, i, i+1)
		}
	} else if !found {
		v.queue = slices.Insert(v.queue, i, QueuedJob{ID: j.ID, Machine: j.Machine, Rack: j.Rack, Kind: j.Kind})
	}
	if bm := v.byName[j.Machine]; bm != nil {
		next := *bm
		switch {
		case !j.State.Finished():
			next.entry.Job = BootJob{ID: j.ID, Kind: j.Kind, Step: j.StepName(), Cancelled: j.CancelRequested}
		case bm.entry.Job.ID == j.ID:
			next.entry.Job = BootJob{}
		}
		if next.entry.Job != bm.entry.Job {
			v.unpublish(bm)
			v.publish(&next)
		}
	}
	v.wake(j.ID)
}

// notifyMachine wakes the waiters of the machine's active job (an
// inspection report changes the machine, and a wait looks at it).
func (v *BootView) notifyMachine(name string) {
	bm := v.byName[name]
	if bm == nil || bm.entry.Job.ID == "" {
		return
	}
	v.wake(bm.entry.Job.ID)
}

// wake closes the channel of job id's waiters, if any. A writer of the
// view calls it (mu held); JobChanged takes only wmu.
func (v *BootView) wake(id string) {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	if ch, ok := v.waiters[id]; ok {
		close(ch)
		delete(v.waiters, id)
	}
}

func (v *BootView) publish(bm *bootMachine) {
	v.byName[bm.entry.Machine] = bm
	for _, hw := range bm.macs {
		v.byMAC[[6]byte(hw)] = bm
	}
	if bm.entry.IP.IsValid() {
		v.byIP[bm.entry.IP] = bm
	}
}

// unpublish removes the index entries that still point at bm (another
// machine may own a MAC or address by now, within the same change set).
func (v *BootView) unpublish(bm *bootMachine) {
	for _, hw := range bm.macs {
		if v.byMAC[[6]byte(hw)] == bm {
			delete(v.byMAC, [6]byte(hw))
		}
	}
	if bm.entry.IP.IsValid() && v.byIP[bm.entry.IP] == bm {
		delete(v.byIP, bm.entry.IP)
	}
}

func toBootSubnet(sn Subnet) BootSubnet {
	out := BootSubnet{Name: sn.Name}
	out.Prefix, _ = netip.ParsePrefix(sn.CIDR)
	out.Gateway, _ = netip.ParseAddr(sn.Gateway)
	for _, d := range sn.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			out.DNS = append(out.DNS, a)
		}
	}
	if sn.RangeFirst != "" {
		out.RangeFirst, _ = netip.ParseAddr(sn.RangeFirst)
		out.RangeLast, _ = netip.ParseAddr(sn.RangeLast)
	}
	return out
}
