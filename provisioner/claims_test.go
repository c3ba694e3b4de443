package provisioner

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metalhall/metalhall/cluster"
	"github.com/metalhall/metalhall/cluster/clustertest"
	"github.com/metalhall/metalhall/inventory"
)

// etcd is one embedded etcd member for the tests of instances sharing
// jobs, started by the first that needs it.
var etcd struct {
	once sync.Once
	srv  *clustertest.Server
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if etcd.srv != nil {
		etcd.srv.Close()
	}
	os.Exit(code)
}

func sharedEtcd(t *testing.T) *clustertest.Server {
	t.Helper()
	etcd.once.Do(func() { etcd.srv, etcd.err = clustertest.Start() })
	if etcd.err != nil {
		t.Fatal(etcd.err)
	}
	return etcd.srv
}

// instance is one metalhall instance's engine with its own etcd client
// and cluster membership, on the lab's shared store and machines.
type instance struct {
	name   string
	eng    *Engine
	member *cluster.Member
	client *clientv3.Client
	bmc    *taggedBMC
	cancel context.CancelFunc
	done   chan struct{}
}

// taggedBMC records which instance sent each call to the lab's BMCs.
type taggedBMC struct {
	*fakeBMC
	name string
	log  *callLog
}

type callLog struct {
	mu    sync.Mutex
	calls []string // "instance machine call"
}

func (l *callLog) add(s string) {
	l.mu.Lock()
	l.calls = append(l.calls, s)
	l.mu.Unlock()
}

// by is which instances sent calls about a machine.
func (l *callLog) by(machine string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, c := range l.calls {
		f := strings.Fields(c)
		if f[1] == machine {
			out[f[0]]++
		}
	}
	return out
}

func (b *taggedBMC) SetBootDevice(ctx context.Context, m *inventory.Machine, dev inventory.BootDevice, persistent bool) error {
	b.log.add(b.name + " " + m.Name + " boot-" + string(dev))
	return b.fakeBMC.SetBootDevice(ctx, m, dev, persistent)
}

func (b *taggedBMC) SetPower(ctx context.Context, m *inventory.Machine, action inventory.PowerAction) error {
	b.log.add(b.name + " " + m.Name + " power-" + string(action))
	return b.fakeBMC.SetPower(ctx, m, action)
}

func (b *taggedBMC) PowerState(ctx context.Context, m *inventory.Machine) (string, error) {
	b.log.add(b.name + " " + m.Name + " status")
	return b.fakeBMC.PowerState(ctx, m)
}

func joinCluster(t *testing.T, srv *clustertest.Server, name string) (*cluster.Member, *clientv3.Client) {
	t.Helper()
	c := srv.Client(t)
	m, err := cluster.Join(context.Background(), cluster.Config{Client: c, Prefix: clustertest.Prefix(t), ID: name, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, c
}

// newClusterLab is a lab whose store two instances, a and b, share, each
// with its own claims on one etcd.
func newClusterLab(t *testing.T, cfg Config) (*lab, map[string]*instance) {
	t.Helper()
	srv := sharedEtcd(t)
	log := &callLog{}
	ins := map[string]*instance{}
	for _, name := range []string{"a", "b"} {
		m, c := joinCluster(t, srv, name)
		ins[name] = &instance{name: name, member: m, client: c}
	}
	cfg.Claims = ins["a"].member
	l := newLab(t, cfg)
	// a is the lab's own engine; give it the tagging BMC by building it
	// again on the same store before anything runs.
	l.stop()
	for _, name := range []string{"a", "b"} {
		in := ins[name]
		in.bmc = &taggedBMC{fakeBMC: l.bmc, name: name, log: log}
		c := l.eng.cfg
		c.Claims = in.member
		in.eng = must(New(l.inv, in.bmc, c))
		in.run()
		t.Cleanup(in.stop)
	}
	l.eng = ins["a"].eng
	l.srv.Config.Handler = l.eng.AgentHandler()
	return l, ins
}

func (in *instance) run() {
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel, in.done = cancel, make(chan struct{})
	go func() { in.eng.Run(ctx); close(in.done) }()
}

func (in *instance) stop() {
	in.cancel()
	<-in.done
}

func TestAJobRunsOnExactlyOneInstance(t *testing.T) {
	l, ins := newClusterLab(t, Config{})
	log := ins["a"].bmc.log
	var ids []string
	for i := 1; i <= 6; i++ {
		name := fmt.Sprintf("m%d", i)
		l.machine(name, fmt.Sprintf("r%d", i%2), i, inventory.MachineAvailable)
		ids = append(ids, l.submit(Request{Kind: inventory.JobProvision, Machine: name, Image: "ubuntu"}).ID)
	}
	for i, id := range ids {
		j := l.waitJob(id)
		name := fmt.Sprintf("m%d", i+1)
		if j.State != inventory.JobSucceeded {
			t.Fatalf("%s: %s (%s) %s", name, j.State, stepNames(j), j.Error)
		}
		for _, s := range j.Steps {
			if s.Attempts != 1 {
				t.Errorf("%s: step %s ran %d times", name, s.Name, s.Attempts)
			}
		}
		if by := log.by(name); len(by) != 1 {
			t.Errorf("%s was driven by %v, want one instance", name, by)
		}
		if n := l.bmc.count(name, "boot pxe"); n != 1 {
			t.Errorf("%s: boot pxe sent %d times", name, n)
		}
	}
	// Finished jobs give their claims back (a worker releases before it
	// ends, and Run returns after its workers).
	ins["a"].stop()
	ins["b"].stop()
	for _, id := range ids {
		if owner, err := ins["a"].member.Owner(context.Background(), id); err != nil || owner != "" {
			t.Errorf("job %s still owned by %q (%v)", id, owner, err)
		}
	}
}

// TestOwnerDeathMidJobIsTakenOverFromItsPersistedStep kills the instance
// driving a provision while the machine writes its image: its engine stops
// without cleanup and its etcd client goes without revoking its lease, as a
// kill -9 would. After the TTL the other instance claims the job and
// carries it on from write-image; nothing done before is done again.
func TestOwnerDeathMidJobIsTakenOverFromItsPersistedStep(t *testing.T) {
	l, ins := newClusterLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	p := newPause(1)
	l.bmc.pauses["agent task"] = p
	id := l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID
	select {
	case <-p.reached:
	case <-time.After(time.Minute): // hang guard
		t.Fatal("the agent never asked for its task")
	}
	ownerID, err := ins["a"].member.Owner(ctx, id)
	if err != nil || ins[ownerID] == nil {
		t.Fatalf("owner %q (%v)", ownerID, err)
	}
	owner, other := ins[ownerID], ins["a"]
	if ownerID == "a" {
		other = ins["b"]
	}
	for i := 0; must(l.inv.Job(ctx, id)).StepName() != stepWriteImage; i++ {
		if i > 2000 {
			t.Fatalf("paused at %s, want %s", must(l.inv.Job(ctx, id)).StepName(), stepWriteImage)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// kill -9: no release, no revoke.
	owner.stop()
	owner.client.Close()
	died := time.Now()
	for {
		o, err := other.member.Owner(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if o == other.name {
			break
		}
		time.Sleep(20 * time.Millisecond) // waiting for the TTL and the takeover; no assertion on how long
	}
	t.Logf("owner %s gone → job claimed by %s after %v (TTL 2s)", owner.name, other.name, time.Since(died).Round(time.Millisecond))
	l.eng = other.eng
	l.srv.Config.Handler = other.eng.AgentHandler()
	close(p.released)
	j := l.waitJob(id)
	m := must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || m.State != inventory.MachineDeployed {
		t.Fatalf("after takeover: job %s (%s) %s, machine %s", j.State, stepNames(j), j.Error, m.State)
	}
	// write-image is resumed, not attempted again (step.resumed below).
	for _, s := range j.Steps {
		if s.State != inventory.StepDone || s.Attempts != 1 {
			t.Errorf("step %s: %s after %d attempts, want 1", s.Name, s.State, s.Attempts)
		}
	}
	if n := l.bmc.count("m1", "boot pxe"); n != 1 {
		t.Errorf("boot pxe sent %d times: a step done before the takeover ran again", n)
	}
	if n := l.bmc.count("m1", "boot disk"); n != 1 {
		t.Errorf("boot disk sent %d times", n)
	}
	by := ins["a"].bmc.log.by("m1")
	if by[owner.name] == 0 || by[other.name] == 0 {
		t.Errorf("BMC calls by instance %v: want both, the owner before and the other after", by)
	}
	evs := must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"}))
	resumed := false
	for _, e := range evs {
		resumed = resumed || e.Action == "step.resumed"
	}
	if !resumed {
		t.Error("no step.resumed event for the takeover")
	}
	other.stop() // its worker released the claim before it ended
	if o, _ := other.member.Owner(ctx, id); o != "" {
		t.Errorf("finished job still owned by %q", o)
	}
}

// TestLostClaimsStopTheJobsWhereTheyAre revokes an instance's lease (as its
// expiry during a partition would): the engine stops driving its job at
// once, leaves it persisted where it was, and runs it again once it holds
// a claim again.
func TestLostClaimsStopTheJobsWhereTheyAre(t *testing.T) {
	srv := sharedEtcd(t)
	m, c := joinCluster(t, srv, "solo")
	l := newLab(t, Config{Claims: m})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	p := newPause(1)
	l.bmc.pauses["agent task"] = p
	id := l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID
	select {
	case <-p.reached:
	case <-time.After(time.Minute): // hang guard
		t.Fatal("the agent never asked for its task")
	}
	resp := must(c.Get(ctx, clustertest.Prefix(t)+"members/solo"))
	lost := m.Lost()
	must(c.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)))
	select {
	case <-lost:
	case <-time.After(time.Minute):
		t.Fatal("Lost never closed")
	}
	if j := must(l.inv.Job(ctx, id)); j.State.Finished() {
		t.Fatalf("the job ended on losing its claim: %s %s", j.State, j.Error)
	}
	close(p.released)
	j := l.waitJob(id)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("job %s (%s) %s", j.State, stepNames(j), j.Error)
	}
	if n := l.bmc.count("m1", "boot pxe"); n != 1 {
		t.Errorf("boot pxe sent %d times", n)
	}
}
