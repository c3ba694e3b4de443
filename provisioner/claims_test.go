package provisioner

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/cluster"
	"github.com/metalhall/metalhall/cluster/clustertest"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
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

// killOwner kills the instance that owns job id, as a kill -9 would: its
// engine stops without cleanup and its etcd client goes without revoking
// its lease. It waits for the other instance to claim the job after the
// TTL, and points the lab's machines (the agent endpoints, the Booter) at
// that one, as DHCP answered by the living instance would.
func killOwner(t *testing.T, l *lab, ins map[string]*instance, id string) (owner, other *instance) {
	t.Helper()
	ctx := context.Background()
	ownerID, err := ins["a"].member.Owner(ctx, id)
	if err != nil || ins[ownerID] == nil {
		t.Fatalf("owner %q (%v)", ownerID, err)
	}
	owner, other = ins[ownerID], ins["a"]
	if ownerID == "a" {
		other = ins["b"]
	}
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
		// On a busy machine the new owner may finish the job, and give
		// its claim back, between two looks: the job's events say who
		// ran it (the callers check them).
		if o == "" && must(l.inv.Job(ctx, id)).State.Finished() {
			break
		}
		time.Sleep(20 * time.Millisecond) // waiting for the TTL and the takeover; no assertion on how long
	}
	t.Logf("owner %s gone → job claimed by %s after %v (TTL 2s)", owner.name, other.name, time.Since(died).Round(time.Millisecond))
	l.setEngine(other.eng)
	return owner, other
}

// waitJobStep waits until job id is at step.
func (l *lab) waitJobStep(id, step string) {
	l.t.Helper()
	for i := 0; must(l.inv.Job(context.Background(), id)).StepName() != step; i++ {
		if i > 2000 {
			l.t.Fatalf("at %s, want %s", must(l.inv.Job(context.Background(), id)).StepName(), step)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// resumes is the details of a machine's step.resumed and job.taken-over
// events.
func (l *lab) resumes(machine string) (resumed, taken []string) {
	for _, e := range must(l.inv.Events(context.Background(), inventory.EventFilter{Subject: "machine/" + machine})) {
		switch e.Action {
		case "step.resumed":
			resumed = append(resumed, e.Detail)
		case "job.taken-over":
			taken = append(taken, e.Detail)
		}
	}
	return resumed, taken
}

// provisionHeldAtTask enrolls machine and provisions it; the machine's
// agent is held once it has fetched its task, until p is released.
func (l *lab) provisionHeldAtTask(machine string) (id string, p *pause) {
	l.t.Helper()
	l.machine(machine, "r0", 1, inventory.MachineAvailable)
	p = newPause(1)
	l.bmc.pauses["agent task"] = p
	id = l.submit(Request{Kind: inventory.JobProvision, Machine: machine, Image: "ubuntu"}).ID
	p.await(l.t, "the agent never asked for its task")
	return id, p
}

// await waits until the pause is reached; what says what never happened.
func (p *pause) await(t *testing.T, what string) {
	t.Helper()
	select {
	case <-p.reached:
	case <-time.After(time.Minute): // hang guard
		t.Fatal(what)
	}
}

// TestOwnerDeathAtAnAgentStepBootsTheMachineAgainFromTheNewOwner kills the
// instance driving a provision while the machine writes its image. The
// machine's agent was booted with the dead instance's address and would
// call it for ever; the instance that takes the job over rewinds it to
// set-pxe in the write that records the takeover, boots the machine
// again, and the new agent calls home to it: the machine ends deployed.
// The old agent, still running until the power cycle, and here able to
// reach a living instance, has its late reports refused: its "done" must
// not end the new boot's write.
func TestOwnerDeathAtAnAgentStepBootsTheMachineAgainFromTheNewOwner(t *testing.T) {
	l, ins := newClusterLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	newBoot := newPause(2) // the new owner's power cycle
	l.bmc.pauses["power cycle"] = newBoot
	var boots atomic.Int32
	// The first boot's agent sends its inspection, then writes until the
	// test lets it report.
	inspected, resume := make(chan error, 1), make(chan struct{})
	late := make(chan [2]error, 1)
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		if boots.Add(1) == 1 {
			inspected <- a.call("POST", wire.EndpointInspection, hgx(8), nil)
			<-resume
			late <- [2]error{
				a.call("POST", wire.EndpointProgress, wire.Progress{JobID: task.JobID, Step: wire.StepWrite, Bytes: 2 << 20, Total: 2 << 20}, nil),
				a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepVerify}, nil),
			}
			return
		}
		goodAgent(t, a, task)
	}
	id := l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID
	select {
	case err := <-inspected:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // hang guard
		t.Fatal("the agent never sent its inspection")
	}
	l.waitJobStep(id, stepWriteImage)
	owner, other := killOwner(t, l, ins, id)
	newBoot.await(t, "the new owner never power-cycled the machine")
	j := must(l.inv.Job(ctx, id))
	if j.StepName() != stepPowerCycle || j.Instance != other.name || !j.AgentSeenAt.IsZero() || j.AgentDone || j.Progress.Bytes != 0 {
		t.Fatalf("after the takeover: at %s, instance %q, agent seen %v, done %v, progress %d bytes; want power-cycle by %s, the agent's reports cleared",
			j.StepName(), j.Instance, j.AgentSeenAt, j.AgentDone, j.Progress.Bytes, other.name)
	}
	close(resume)
	if errs := <-late; errs[0] == nil || errs[1] == nil || !strings.Contains(errs[1].Error(), "earlier boot") {
		t.Errorf("the old boot's agent reported after the rewind: progress %v, done %v; want both refused", errs[0], errs[1])
	}
	if j := must(l.inv.Job(ctx, id)); j.AgentDone || j.Progress.Bytes != 0 {
		t.Errorf("a refused report changed the job: done %v, progress %d bytes", j.AgentDone, j.Progress.Bytes)
	}
	close(newBoot.released)
	j = l.waitJob(id)
	m := must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || m.State != inventory.MachineDeployed {
		t.Fatalf("after takeover: job %s (%s) %s, machine %s", j.State, stepNames(j), j.Error, m.State)
	}
	if n := boots.Load(); n != 2 {
		t.Errorf("the agent ran %d times, want 2 (the dead owner's boot and the new one's)", n)
	}
	if n := l.bmc.count("m1", "boot pxe"); n != 2 {
		t.Errorf("boot pxe sent %d times, want 2: once by each owner", n)
	}
	if n := l.bmc.count("m1", "boot disk"); n != 1 {
		t.Errorf("boot disk sent %d times", n)
	}
	log := ins["a"].bmc.log
	log.mu.Lock()
	calls := slices.Clone(log.calls)
	log.mu.Unlock()
	for _, want := range []string{owner.name + " m1 boot-pxe", other.name + " m1 boot-pxe", other.name + " m1 power-cycle", other.name + " m1 boot-disk"} {
		if !slices.Contains(calls, want) {
			t.Errorf("no %q among the BMC calls %v", want, calls)
		}
	}
	// The new owner's boot starts the count of boot attempts afresh.
	for _, s := range j.Steps {
		if s.State != inventory.StepDone || s.Attempts != 1 {
			t.Errorf("step %s: %s after %d attempts, want done after 1", s.Name, s.State, s.Attempts)
		}
	}
	resumed, taken := l.resumes("m1")
	if len(taken) != 1 || len(resumed) != 0 {
		t.Fatalf("job.taken-over events %q and step.resumed %q, want one and none", taken, resumed)
	}
	want := fmt.Sprintf("provision job %s taken over from instance %s by instance %s after %s stopped answering; it was at write-image, "+
		"and the machine's agent may be calling home to %s: instance %s boots the machine again (set-pxe, power-cycle)",
		id, owner.name, other.name, owner.name, owner.name, other.name)
	if !strings.HasPrefix(taken[0], want) {
		t.Errorf("takeover event:\n %q\nwant it to begin\n %q", taken[0], want)
	}
	other.stop() // its worker released the claim before it ended
	if o, _ := other.member.Owner(ctx, id); o != "" {
		t.Errorf("finished job still owned by %q", o)
	}
}

// TestOwnerDeathAtABMCStepRunsTheStepAgainOnTheNewOwner kills the owner
// inside set-disk-boot: the agent's work is done, so the other instance
// simply runs the step again, as after a restart, and says who took over
// from whom.
func TestOwnerDeathAtABMCStepRunsTheStepAgainOnTheNewOwner(t *testing.T) {
	l, ins := newClusterLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	p := newPause(1)
	l.bmc.pauses["boot disk"] = p // held (and never let go) on the owner
	id := l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID
	p.await(t, "the owner never set the disk boot")
	l.waitJobStep(id, stepSetDiskBoot)
	owner, other := killOwner(t, l, ins, id)
	j := l.waitJob(id)
	m := must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || m.State != inventory.MachineDeployed {
		t.Fatalf("after takeover: job %s (%s) %s, machine %s", j.State, stepNames(j), j.Error, m.State)
	}
	if n := l.bmc.count("m1", "boot pxe"); n != 1 {
		t.Errorf("boot pxe sent %d times: the machine was booted again for a BMC step", n)
	}
	if n := l.bmc.count("m1", "boot disk"); n != 1 {
		t.Errorf("boot disk set %d times, want once (by the new owner; the dead one's call never went out)", n)
	}
	resumed, taken := l.resumes("m1")
	if len(taken) != 0 {
		t.Errorf("job.taken-over at a BMC step: %q", taken)
	}
	want := fmt.Sprintf("provision job %s: set-disk-boot again on instance %s, which took the job over from instance %s after %s stopped answering (attempt 1)",
		id, other.name, owner.name, owner.name)
	if len(resumed) != 1 || resumed[0] != want {
		t.Errorf("step.resumed events %q, want\n %q", resumed, want)
	}
}

// TestARestartedInstanceCarriesItsJobOnWithoutABoot restarts the one
// instance running a provision under the same ID (kill -9, then start
// again): the agent keeps calling the same address, which answers again,
// so the job carries on at write-image, as on a single instance.
func TestARestartedInstanceCarriesItsJobOnWithoutABoot(t *testing.T) {
	srv := sharedEtcd(t)
	m, c := joinCluster(t, srv, "solo")
	l := newLab(t, Config{Claims: m})
	ctx := context.Background()
	id, p := l.provisionHeldAtTask("m1")
	l.waitJobStep(id, stepWriteImage)
	l.stop()
	c.Close() // kill -9: no revoke
	// The ID is free again once the dead life's lease lapses.
	watch := srv.Client(t)
	for must(watch.Get(ctx, clustertest.Prefix(t)+"members/solo")).Count != 0 {
		time.Sleep(20 * time.Millisecond) // waiting for the TTL; no assertion on how long
	}
	again, _ := joinCluster(t, srv, "solo")
	cfg := l.eng.cfg
	cfg.Claims = again
	l.eng = must(New(l.inv, l.bmc, cfg))
	l.srv.Config.Handler = l.eng.AgentHandler()
	l.start()
	// The agent's held call goes on only once the restarted worker has
	// resumed its step: released earlier, the agent's done could end
	// write-image first, and the worker would resume the next step.
	l.waitEvent("m1", "step.resumed")
	close(p.released)
	j := l.waitJob(id)
	if j.State != inventory.JobSucceeded || j.Instance != "solo" {
		t.Fatalf("after the restart: job %s (%s) %s, instance %q", j.State, stepNames(j), j.Error, j.Instance)
	}
	if n := l.bmc.count("m1", "boot pxe"); n != 1 {
		t.Errorf("boot pxe sent %d times: the restart booted the machine again", n)
	}
	resumed, taken := l.resumes("m1")
	if len(taken) != 0 {
		t.Errorf("a restart of the same instance counted as a takeover: %q", taken)
	}
	want := fmt.Sprintf("provision job %s: write-image again after instance solo restarted (attempt 1)", id)
	if len(resumed) != 1 || resumed[0] != want {
		t.Errorf("step.resumed events %q, want\n %q", resumed, want)
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
	id, p := l.provisionHeldAtTask("m1")
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

// TestAnInstanceThatDoesNotOwnAJobBootsItsMachine has the machine of a
// job one instance owns netboot entirely through the other, as when the
// other answers its DHCP first: the boot script (only once that instance
// saw the machine's PXE DHCP request), the agent's calls and the installed
// OS's metadata fetch. They are all in the shared inventory, so the
// owner's job carries on to deployed. The DHCP request seen is the
// answering instance's own: the owner, which saw none, serves no script.
func TestAnInstanceThatDoesNotOwnAJobBootsItsMachine(t *testing.T) {
	l, ins := newClusterLab(t, Config{ScriptAfterDHCP: true, BootTimeout: time.Hour})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	l.bmc.silent["m1"] = true // the test boots it, below
	id := l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID
	l.waitJobStep(id, stepWaitAgent)
	ownerID := must(ins["a"].member.Owner(ctx, id))
	owner, other := ins["a"].eng, ins["b"].eng
	if ownerID == "b" {
		owner, other = other, owner
	}
	m := must(l.inv.Machine(ctx, "m1"))
	mac := must(net.ParseMAC(m.MACs[0]))
	pxe := netboot.Client{MAC: mac, Arch: netboot.ArchEFIx64, VendorClass: "PXEClient:Arch:00007:UNDI:003016"}
	if b := must(other.Boot(ctx, pxe)); b.Kind != netboot.BootProvision {
		t.Fatalf("DHCP answer of the instance that does not own the job: %v", b.Kind)
	}
	script := must(other.Boot(ctx, netboot.Client{MAC: mac, Arch: netboot.ArchEFIx64}))
	if script.Kind != netboot.BootProvision {
		t.Fatalf("boot script of the instance that answered DHCP: %v", script.Kind)
	}
	a := &fakeAgent{l: l}
	for _, p := range strings.Fields(script.Cmdline) {
		if v, ok := strings.CutPrefix(p, "metalhall.token="); ok {
			a.token = v
		}
	}
	if !other.CheckBootToken(ctx, mac, a.token) {
		t.Error("the instance that answered DHCP refuses the script request with the job's token")
	}
	if owner.CheckBootToken(ctx, mac, a.token) {
		t.Error("the owner, which saw no DHCP request, serves the script")
	}
	l.srv.Config.Handler = other.AgentHandler()
	var task wire.Task
	if err := a.call("GET", wire.EndpointTask, nil, &task); err != nil {
		t.Fatal(err)
	}
	goodAgent(t, a, task)
	l.waitJobStep(id, stepWaitMetadata)
	req := httptest.NewRequest("GET", "/metadata/meta-data", nil)
	req.RemoteAddr = m.IP + ":40000"
	other.MetadataHandler().ServeHTTP(httptest.NewRecorder(), req)
	j := l.waitJob(id)
	if m := must(l.inv.Machine(ctx, "m1")); j.State != inventory.JobSucceeded || m.State != inventory.MachineDeployed {
		t.Fatalf("job %s (%s) %s, machine %s", j.State, stepNames(j), j.Error, m.State)
	}
	if by := ins["a"].bmc.log.by("m1"); len(by) != 1 || by[ownerID] == 0 {
		t.Errorf("BMC calls by instance %v, want the owner's only", by)
	}
}
