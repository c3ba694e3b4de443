package provisioner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// agentScript is what a fake machine's agent does once it has booted:
// given its task and a client, it reports like the real agent would.
type agentScript func(t *testing.T, a *fakeAgent, task wire.Task)

// lab is a store, an engine, and fake machines behind a fake BMC: a power
// cycle with boot device PXE "boots" the machine, which asks the engine's
// Booter what to boot and runs the agent script against the engine's
// agent endpoints over real HTTP.
type lab struct {
	t   *testing.T
	inv *inventory.Store
	eng *Engine
	// engMu guards eng where the fake machines read it (their goroutines)
	// and a takeover test swaps it (setEngine).
	engMu  sync.Mutex
	srv    *httptest.Server
	bmc    *fakeBMC
	script agentScript
	cancel context.CancelFunc
	done   chan struct{}
	// pace: a booted agent calls home, and the installed OS fetches its
	// metadata, only once the job waits for it, as on a real machine,
	// whose boot takes far longer than the steps before; without it the
	// call may come first.
	pace bool
}

type fakeBMC struct {
	mu       sync.Mutex
	l        *lab
	boot     map[string]string // machine → pxe|disk
	calls    []string
	inflight atomic.Int64
	maxSeen  atomic.Int64
	gate     *callGate // when set, holds every call until the test opens it
	fail     map[string]error
	silent   map[string]bool // machines that never boot
	pauses   map[string]*pause
	seen     map[string]int
}

// pause blocks the nth occurrence of a call (or boot stage) until released.
type pause struct {
	n        int
	reached  chan struct{}
	released chan struct{}
}

func newPause(n int) *pause {
	return &pause{n: n, reached: make(chan struct{}), released: make(chan struct{})}
}

// hit blocks when key's pause is due, until it is released or ctx ends.
func (b *fakeBMC) hit(ctx context.Context, key string) error {
	b.mu.Lock()
	b.seen[key]++
	p := b.pauses[key]
	due := p != nil && b.seen[key] == p.n
	b.mu.Unlock()
	if !due {
		return nil
	}
	close(p.reached)
	select {
	case <-p.released:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *fakeBMC) enter(m *inventory.Machine, call string) error {
	n := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for {
		old := b.maxSeen.Load()
		if n <= old || b.maxSeen.CompareAndSwap(old, n) {
			break
		}
	}
	b.mu.Lock()
	g := b.gate
	b.mu.Unlock()
	if g != nil {
		g.arrive <- m.Name + " " + call
		<-g.open
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, m.Name+" "+call)
	return b.fail[m.Name]
}

// callGate holds BMC calls: each announces itself on arrive (buffered, so
// the count of calls in flight is exact before the test looks), then waits
// until open is closed.
type callGate struct {
	arrive chan string
	open   chan struct{}
}

func newCallGate() *callGate {
	return &callGate{arrive: make(chan string, 100), open: make(chan struct{})}
}

func (b *fakeBMC) count(machine, call string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		if c == machine+" "+call {
			n++
		}
	}
	return n
}

func (b *fakeBMC) SetBootDevice(ctx context.Context, m *inventory.Machine, dev inventory.BootDevice, persistent bool) error {
	if err := b.hit(ctx, "boot "+string(dev)); err != nil {
		return err
	}
	if err := b.enter(m, "boot "+string(dev)); err != nil {
		return err
	}
	b.mu.Lock()
	b.boot[m.Name] = string(dev)
	b.mu.Unlock()
	return nil
}

func (b *fakeBMC) SetPower(ctx context.Context, m *inventory.Machine, action inventory.PowerAction) error {
	if err := b.hit(ctx, "power "+string(action)); err != nil {
		return err
	}
	if err := b.enter(m, "power "+string(action)); err != nil {
		return err
	}
	b.mu.Lock()
	dev, silent := b.boot[m.Name], b.silent[m.Name]
	b.mu.Unlock()
	if action == "cycle" && !silent {
		go b.l.powerOn(m, dev)
	}
	return nil
}

func (b *fakeBMC) PowerState(ctx context.Context, m *inventory.Machine) (string, error) {
	return "off", b.enter(m, "status")
}

type fakeAgent struct {
	l     *lab
	token string
}

func (a *fakeAgent) call(method, endpoint string, in, out any) error {
	var body []byte
	if in != nil {
		body = must(json.Marshal(in))
	}
	req := must(http.NewRequest(method, a.l.srv.URL+wire.PathPrefix+endpoint, bytes.NewReader(body)))
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e wire.Error
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s: %d %s", method, endpoint, resp.StatusCode, e.Error)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// engine is the lab's engine, as the fake machines see it.
func (l *lab) engine() *Engine {
	l.engMu.Lock()
	defer l.engMu.Unlock()
	return l.eng
}

// setEngine swaps the lab's engine (another instance took the jobs over).
func (l *lab) setEngine(e *Engine) {
	l.engMu.Lock()
	l.eng = e
	l.engMu.Unlock()
}

// powerOn is the fake machine booting: from the network (the agent) or
// from its disk (the installed OS fetching its metadata).
func (l *lab) powerOn(m *inventory.Machine, dev string) {
	ctx := context.Background()
	mac := must(net.ParseMAC(m.MACs[0]))
	eng := l.engine()
	boot, err := eng.Boot(ctx, netboot.Client{MAC: mac, Arch: netboot.ArchEFIx64})
	if err != nil {
		l.t.Errorf("Boot(%s): %v", m.Name, err)
		return
	}
	if dev == "disk" || boot.Kind == netboot.BootLocal {
		if l.pace {
			l.waitStep(m.Name, stepWaitMetadata)
		}
		l.bmc.hit(ctx, "metadata")
		req := httptest.NewRequest("GET", "/metadata/meta-data", nil)
		req.RemoteAddr = m.IP + ":40000"
		rec := httptest.NewRecorder()
		eng.MetadataHandler().ServeHTTP(rec, req)
		return
	}
	if boot.Kind != netboot.BootProvision {
		l.t.Logf("%s boots %v", m.Name, boot.Kind)
		return
	}
	a := &fakeAgent{l: l}
	for _, p := range strings.Fields(boot.Cmdline) {
		if v, ok := strings.CutPrefix(p, "metalhall.token="); ok {
			a.token = v
		}
	}
	l.bmc.hit(ctx, "agent boot")
	if l.pace {
		l.waitStep(m.Name, stepWaitAgent)
	}
	var task wire.Task
	if err := a.call("GET", wire.EndpointTask, nil, &task); err != nil {
		l.t.Logf("%s: agent task: %v", m.Name, err)
		return // a stale boot after its job ended
	}
	l.bmc.hit(ctx, "agent task")
	l.script(l.t, a, task)
}

// goodAgent does what the real agent does, successfully.
func goodAgent(t *testing.T, a *fakeAgent, task wire.Task) {
	a.call("POST", wire.EndpointInspection, hgx(8), nil)
	switch task.Kind {
	case wire.KindProvision:
		if task.Image == nil || task.Image.SHA256 == "" || task.TargetDisk != "nvme0n1" {
			t.Errorf("provision task without image or the profile's OS disk: %+v", task)
		}
		a.call("POST", wire.EndpointProgress, wire.Progress{JobID: task.JobID, Step: wire.StepWrite, Bytes: 1 << 20, Total: 2 << 20}, nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepVerify, Detail: "sha256 ok"}, nil)
	case wire.KindWipe:
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepWipe, Erase: []wire.EraseRecord{passedErase("nvme0n1")}}, nil)
	case wire.KindInspect:
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepInspect}, nil)
	}
}

func hgx(gpus int) wire.Inventory {
	addrs := []string{}
	for i := 0; i < gpus; i++ {
		addrs = append(addrs, fmt.Sprintf("0000:%02x:00.0", 0x18+i*0x10))
	}
	inv := wire.Inventory{System: wire.System{Vendor: "Supermicro", Product: "SYS-821GE-TNHR", Serial: "S1"},
		CPU: wire.CPU{Model: "Intel Xeon Platinum 8480+", Sockets: 2, Cores: 112, Threads: 224}, MemoryBytes: 2 << 40,
		Disks: []wire.Disk{{Name: "nvme0n1", SizeBytes: 1 << 40, NVMe: true}}}
	if gpus > 0 {
		inv.GPUs = []wire.GPUGroup{{Model: "NVIDIA H100 SXM5 80GB", Count: gpus, Addresses: addrs}}
	}
	return inv
}

type fakeImages struct{}

func (fakeImages) Spec(ctx context.Context, image string) (*wire.ImageSpec, error) {
	return &wire.ImageSpec{URL: "/images/" + image, Format: "raw.zst", SHA256: strings.Repeat("ab", 32), UncompressedSize: 2 << 20}, nil
}

type profiles map[string]*Profile

func (p profiles) Profile(ctx context.Context, name string) (*Profile, error) {
	if pr, ok := p[name]; ok {
		return pr, nil
	}
	return nil, fmt.Errorf("profile %q is not defined", name)
}

func newLab(t *testing.T, cfg Config) *lab {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	inv := must(inventory.Open(path, inventory.Options{}))
	t.Cleanup(func() { inv.Close() })
	ctx := context.Background()
	must(inv.CreateSite(ctx, inventory.Site{Name: "s"}))
	must(inv.CreateHall(ctx, inventory.Hall{Name: "h", Site: "s"}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h", Number: 1, BudgetW: 10_000_000}))
	must(inv.SetPhaseState(ctx, "h", 1, inventory.PhaseCommissioning))
	must(inv.CreateSubnet(ctx, inventory.Subnet{Name: "prov", CIDR: "10.7.0.0/24", Gateway: "10.7.0.1"}))
	must(inv.CreateImage(ctx, inventory.Image{Name: "ubuntu", Format: "raw.zst", SHA256: strings.Repeat("cd", 32)}))
	for r := 0; r < 2; r++ {
		must(inv.CreateRack(ctx, inventory.Rack{Name: fmt.Sprintf("r%d", r), Hall: "h", Phase: 1, BudgetW: 130_000}))
	}
	l := &lab{t: t, inv: inv, script: goodAgent}
	l.bmc = &fakeBMC{l: l, boot: map[string]string{}, fail: map[string]error{}, silent: map[string]bool{},
		pauses: map[string]*pause{}, seen: map[string]int{}}
	cfg.TokenKey = []byte("0123456789abcdef0123456789abcdef")
	cfg.ServiceURL, cfg.BootKernelURL, cfg.BootInitrdURL = "http://10.7.0.1:8280", "http://10.7.0.1:8280/boot/vmlinuz", "http://10.7.0.1:8280/boot/initrd"
	cfg.PollInterval = 5 * time.Millisecond
	if cfg.AgentSource == nil {
		// Every fake agent calls from 127.0.0.1, whatever its machine.
		cfg.AgentSource = func(context.Context, *inventory.Machine, netip.Addr) error { return nil }
	}
	if cfg.Images == nil {
		cfg.Images = fakeImages{}
	}
	if cfg.Profiles == nil {
		cfg.Profiles = profiles{"hgx-h100": {GPUModel: "H100 SXM5", GPUCount: 8, CPUSockets: 2, MinMemoryGiB: 1024, OSDisk: "nvme0n1"}}
	}
	l.eng = must(New(inv, l.bmc, cfg))
	// The agent endpoints of whichever engine the lab has now (a takeover
	// test swaps it).
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.engine().AgentHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(l.srv.Close)
	l.start()
	t.Cleanup(l.stop)
	return l
}

func (l *lab) start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() { l.eng.Run(ctx); close(l.done) }()
}

func (l *lab) stop() {
	if l.cancel != nil {
		l.cancel()
		<-l.done
		l.cancel = nil
	}
}

// machine enrolls machine i of rack r in the given state.
func (l *lab) machine(name, rack string, unit int, state inventory.MachineState) {
	ctx := context.Background()
	n := len(must(l.inv.Machines(ctx, inventory.MachineFilter{}))) + 10
	must(l.inv.EnrollMachine(ctx, inventory.Enrollment{Machine: inventory.Machine{Name: name, Rack: rack, Unit: unit,
		MACs: []string{fmt.Sprintf("52:54:00:00:01:%02x", n)}, IP: fmt.Sprintf("10.7.0.%d", n), PowerW: 10_000, Profile: "hgx-h100",
		BMC: inventory.BMC{Address: "bmc-" + name, Protocol: inventory.ProtocolRedfish, Username: "root"}}}))
	path := map[inventory.MachineState][]inventory.MachineState{
		inventory.MachineEnrolled:  nil,
		inventory.MachineAvailable: {inventory.MachineCommissioning, inventory.MachineAvailable},
		inventory.MachineDeployed:  {inventory.MachineCommissioning, inventory.MachineAvailable, inventory.MachineProvisioning, inventory.MachineDeployed},
	}[state]
	for _, s := range path {
		must(l.inv.SetMachineState(ctx, name, s, "", ""))
	}
}

// waitJob waits for a job to finish and returns it.
func (l *lab) waitJob(id string) *inventory.Job {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j := must(l.inv.Job(context.Background(), id))
		if j.State.Finished() {
			return j
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("job %s did not finish: %+v", id, j)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStep waits until the machine's active job is at step.
func (l *lab) waitStep(machine, step string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if j, err := l.inv.ActiveJob(context.Background(), machine); err == nil && j.StepName() == step {
			return
		}
		if time.Now().After(deadline) {
			l.t.Errorf("the job of %s did not reach %s", machine, step)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *lab) submit(r Request) *inventory.Job {
	l.t.Helper()
	return must(l.eng.Submit(context.Background(), r))
}

func stepNames(j *inventory.Job) string {
	var s []string
	for _, st := range j.Steps {
		s = append(s, st.Name+":"+string(st.State))
	}
	return strings.Join(s, " ")
}

func TestCommissionProvisionReleaseHappyPath(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)

	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1", Actor: "tech"}).ID)
	m := must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || m.State != inventory.MachineAvailable {
		t.Fatalf("commission: job %s (%s), machine %s %q", j.State, stepNames(j), m.State, m.Reason)
	}
	if report, at, err := l.inv.Inspection(ctx, "m1"); err != nil || !strings.Contains(string(report), "H100 SXM5") || !at.Equal(m.InspectedAt) {
		t.Fatalf("inspection not stored: %s at %v (%v), the machine says %v", report, at, err, m.InspectedAt)
	}
	for _, s := range j.Steps {
		if s.State != inventory.StepDone || s.StartedAt.IsZero() || s.EndedAt.IsZero() {
			t.Fatalf("step not persisted: %+v", s)
		}
	}

	j = l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu", SSHKeys: []string{"ssh-ed25519 AAAA tenant"}}).ID)
	m = must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || m.State != inventory.MachineDeployed || m.Image != "ubuntu" {
		t.Fatalf("provision: job %s (%s) %s, machine %s", j.State, stepNames(j), j.Error, m.State)
	}
	if l.bmc.count("m1", "boot disk") != 1 || j.MetadataSeenAt.IsZero() {
		t.Fatalf("provision did not boot from disk and see metadata: %v", l.bmc.calls)
	}
	// Its metadata is its own, by source address.
	req := httptest.NewRequest("GET", "/metadata/public-keys", nil)
	req.RemoteAddr = m.IP + ":1234"
	rec := httptest.NewRecorder()
	l.eng.MetadataHandler().ServeHTTP(rec, req)
	if rec.Body.String() != "ssh-ed25519 AAAA tenant" {
		t.Fatalf("metadata keys %q", rec.Body.String())
	}
	req.RemoteAddr = "10.7.0.250:1234"
	rec = httptest.NewRecorder()
	l.eng.MetadataHandler().ServeHTTP(rec, req)
	if rec.Code != 404 {
		t.Fatalf("metadata for an unknown address: %d", rec.Code)
	}
	// Reimage of a deployed machine is a provision job too.
	j = l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("reimage: %s %s", j.State, j.Error)
	}

	j = l.waitJob(l.submit(Request{Kind: inventory.JobRelease, Machine: "m1"}).ID)
	m = must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || m.State != inventory.MachineAvailable || m.Image != "" {
		t.Fatalf("release: job %s %s, machine %s image %q", j.State, j.Error, m.State, m.Image)
	}
	evs := must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"}))
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
	}
	for _, want := range []string{"job.queued", "agent.task", "agent.inspection", "agent.done", "metadata.fetched", "job.succeeded"} {
		if !strings.Contains(strings.Join(actions, " "), want) {
			t.Errorf("events lack %s: %v", want, actions)
		}
	}
}

func TestProfileMismatchListsWhatIsMissing(t *testing.T) {
	l := newLab(t, Config{})
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointInspection, hgx(7), nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobFailed || m.State != inventory.MachineFailed || m.FailedStep != stepCheckProfile ||
		!strings.Contains(m.Reason, "expected 8 GPUs H100 SXM5, found 7") {
		t.Fatalf("job %s, machine %s step %q reason %q", j.State, m.State, m.FailedStep, m.Reason)
	}
}

func TestAgentErrorFailsTheMachineWithIt(t *testing.T) {
	l := newLab(t, Config{})
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: false, Step: wire.StepVerify,
			Error: "sha256 of nvme0n1 is 00ff…, the image's is abab…"}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobFailed || m.State != inventory.MachineFailed || m.FailedStep != stepWriteImage ||
		!strings.Contains(m.Reason, "sha256 of nvme0n1") {
		t.Fatalf("machine %s step %q reason %q", m.State, m.FailedStep, m.Reason)
	}
}

type brokenImages struct{}

func (brokenImages) Spec(ctx context.Context, image string) (*wire.ImageSpec, error) {
	return nil, errors.New("block map sha256/ab/abab.bmap.json: unexpected end of JSON input")
}

// An image the service cannot describe fails the job at once with that
// reason; it is not left to a deadline that would blame the machine.
func TestBrokenImageFailsTheJobAtOnce(t *testing.T) {
	l := newLab(t, Config{Images: brokenImages{}, StallTimeout: time.Hour})
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobFailed || m.FailedStep != stepWriteImage || !strings.Contains(m.Reason, `cannot describe image "ubuntu"`) {
		t.Fatalf("job %s, machine %s at %q: %q", j.State, m.State, m.FailedStep, m.Reason)
	}
}

func TestMachineNeverSeenIsRetriedThenFailed(t *testing.T) {
	l := newLab(t, Config{BootTimeout: 150 * time.Millisecond, BootRetries: 1})
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	l.bmc.silent["m1"] = true
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobFailed || m.FailedStep != stepWaitAgent || !strings.Contains(m.Reason, "no call-home from the agent") ||
		!strings.Contains(m.Reason, "52:54:00:00:01") {
		t.Fatalf("machine %s step %q reason %q", m.State, m.FailedStep, m.Reason)
	}
	if n := l.bmc.count("m1", "power cycle"); n != 2 {
		t.Fatalf("power cycles %d, want 2 (one re-PXE)", n)
	}
}

func TestBMCFailureIsTheReason(t *testing.T) {
	l := newLab(t, Config{})
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	l.bmc.fail["m1"] = errors.New("BMC bmc-m1: wrong credentials (Redfish)")
	l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if m.State != inventory.MachineFailed || m.FailedStep != stepBMCCheck || !strings.Contains(m.Reason, "wrong credentials") {
		t.Fatalf("machine %s step %q reason %q", m.State, m.FailedStep, m.Reason)
	}
}

func TestOneJobPerMachineAndCancel(t *testing.T) {
	l := newLab(t, Config{BootTimeout: time.Minute})
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	l.bmc.silent["m1"] = true
	first := l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"})
	_, err := l.eng.Submit(context.Background(), Request{Kind: inventory.JobPower, Machine: "m1", PowerAction: "on"})
	var busy *inventory.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), first.ID) {
		t.Fatalf("second job: %v", err)
	}
	for l.bmc.count("m1", "power cycle") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	must(l.eng.Cancel(context.Background(), first.ID))
	j := l.waitJob(first.ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobCancelled || m.State != inventory.MachineFailed || m.Reason != "cancelled" || m.FailedStep == "" {
		t.Fatalf("cancel: job %s, machine %s %q at %q", j.State, m.State, m.Reason, m.FailedStep)
	}
	// The machine takes a new job now.
	if _, err := l.eng.Submit(context.Background(), Request{Kind: inventory.JobPower, Machine: "m1", PowerAction: "off"}); err != nil {
		t.Fatal(err)
	}
}

// TestSchedulerLimits holds every BMC call until three jobs are inside
// one (MaxJobs 3, at most 2 per rack), checks who runs and who waits, then
// lets them all go.
func TestSchedulerLimits(t *testing.T) {
	l := newLab(t, Config{MaxJobs: 3, MaxPerRack: 2})
	g := newCallGate()
	l.bmc.mu.Lock()
	l.bmc.gate = g
	l.bmc.mu.Unlock()
	var ids []string
	for i := 1; i <= 6; i++ {
		name := fmt.Sprintf("m%d", i)
		l.machine(name, fmt.Sprintf("r%d", i%2), i, inventory.MachineAvailable)
		ids = append(ids, l.submit(Request{Kind: inventory.JobPower, Machine: name, PowerAction: "cycle"}).ID)
	}
	// A held call keeps its job running, so three arrivals are three jobs.
	perRack := map[string]int{}
	for range 3 {
		select {
		case c := <-g.arrive:
			var n int
			fmt.Sscanf(c, "m%d", &n)
			perRack[fmt.Sprintf("r%d", n%2)]++
		case <-time.After(time.Minute): // a hang guard, not a timing
			t.Fatalf("fewer than 3 jobs ever reached the BMC (MaxJobs 3, 2 per rack): %v", perRack)
		}
	}
	for rack, n := range perRack {
		if n > 2 {
			t.Errorf("%d jobs of rack %s at the BMC at once, MaxPerRack 2", n, rack)
		}
	}
	if n := l.bmc.inflight.Load(); n != 3 {
		t.Errorf("%d BMC calls in flight, want 3", n)
	}
	waiting := 0
	for _, id := range ids {
		if l.eng.QueuePosition(context.Background(), id) > 0 {
			waiting++
		}
	}
	if waiting != 3 {
		t.Errorf("%d jobs waiting for a slot while 3 run, want 3", waiting)
	}
	close(g.open)
	for _, id := range ids {
		if j := l.waitJob(id); j.State != inventory.JobSucceeded {
			t.Fatalf("%s: %s %s", id, j.State, j.Error)
		}
	}
	if max := l.bmc.maxSeen.Load(); max != 3 {
		t.Fatalf("%d BMC calls at once, want 3 (MaxJobs 3, 2 per rack)", max)
	}
}

// TestResumeAfterStopAtEveryStep stops the engine (its context ends, no
// cleanup, as a crash would) while a provision job is inside each of its
// steps, starts a new engine on the same store, and checks that the job
// completes with no step lost and BMC commands repeated at most once.
func TestResumeAfterStopAtEveryStep(t *testing.T) {
	where := map[string]struct {
		key string
		n   int
	}{
		stepSetPXE:       {"boot pxe", 1},
		stepPowerCycle:   {"power cycle", 1},
		stepWaitAgent:    {"agent boot", 1},
		stepWriteImage:   {"agent task", 1},
		stepSetDiskBoot:  {"boot disk", 1},
		stepBootDisk:     {"power cycle", 2},
		stepWaitMetadata: {"metadata", 1},
		stepPowerLimit:   {"power limit", 1},
	}
	steps, _ := plan(inventory.JobProvision)
	for _, stopAt := range steps {
		t.Run(stopAt, func(t *testing.T) {
			l := newLab(t, Config{Profiles: profiles{"hgx-h100": limitedProfile()}})
			l.machine("m1", "r0", 1, inventory.MachineAvailable)
			w := where[stopAt]
			p := newPause(w.n)
			l.bmc.pauses[w.key] = p
			id := l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID
			select {
			case <-p.reached:
			case <-time.After(10 * time.Second):
				t.Fatalf("never reached %s", stopAt)
			}
			// The machine may boot a moment before the engine marks the
			// power cycle done: give the step a moment to settle.
			for i := 0; must(l.inv.Job(context.Background(), id)).StepName() != stopAt; i++ {
				if i > 200 {
					t.Fatalf("paused at %s, want %s", must(l.inv.Job(context.Background(), id)).StepName(), stopAt)
				}
				time.Sleep(5 * time.Millisecond)
			}
			l.stop()
			if j := must(l.inv.Job(context.Background(), id)); j.State.Finished() {
				t.Fatalf("job ended %s before the restart: %s", j.State, j.Error)
			}
			// A new engine on the same store; the machine carries on.
			l.eng = must(New(l.inv, l.bmc, l.eng.cfg))
			l.srv.Config.Handler = l.eng.AgentHandler()
			l.start()
			close(p.released)
			j := l.waitJob(id)
			m := must(l.inv.Machine(context.Background(), "m1"))
			if j.State != inventory.JobSucceeded || m.State != inventory.MachineDeployed {
				t.Fatalf("after resume: job %s (%s) %s, machine %s", j.State, stepNames(j), j.Error, m.State)
			}
			for _, s := range j.Steps {
				if s.State != inventory.StepDone || s.Attempts > 2 {
					t.Errorf("step %s: %s after %d attempts", s.Name, s.State, s.Attempts)
				}
			}
			if n := l.bmc.count("m1", "boot disk"); n != 1 {
				t.Errorf("boot disk issued %d times", n)
			}
		})
	}
}

func TestBooterAnswers(t *testing.T) {
	l := newLab(t, Config{BootTimeout: time.Minute})
	ctx := context.Background()
	l.machine("idle", "r0", 1, inventory.MachineAvailable)
	l.machine("dep", "r0", 2, inventory.MachineDeployed)
	l.machine("busy", "r0", 3, inventory.MachineEnrolled)
	l.bmc.silent["busy"] = true
	j := l.submit(Request{Kind: inventory.JobCommission, Machine: "busy"})
	for l.bmc.count("busy", "power cycle") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	boot := func(name string) netboot.Boot {
		m := must(l.inv.Machine(ctx, name))
		return must(l.eng.Boot(ctx, netboot.Client{MAC: must(net.ParseMAC(m.MACs[0]))}))
	}
	if b := boot("idle"); b.Kind != netboot.BootNone {
		t.Errorf("idle machine boots %v", b.Kind)
	}
	if b := boot("dep"); b.Kind != netboot.BootLocal {
		t.Errorf("deployed machine boots %v", b.Kind)
	}
	b := boot("busy")
	// The last console= is /dev/console, where the agent logs: the serial one.
	if b.Kind != netboot.BootProvision || !strings.Contains(b.Cmdline, "metalhall.token=ag_"+j.ID+"_") || b.Kernel == "" ||
		!strings.HasPrefix(b.Cmdline, "console=tty0 console=ttyS0,115200 ") {
		t.Errorf("commissioning machine: %+v", b)
	}
	if b := must(l.eng.Boot(ctx, netboot.Client{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}})); b.Kind != netboot.BootNone {
		t.Errorf("unknown MAC boots %v", b.Kind)
	}
	// A forged or finished job's token is refused.
	if _, err := l.eng.jobForToken(ctx, "ag_"+j.ID+"_AAAA"); err == nil {
		t.Error("forged token accepted")
	}
	must(l.eng.Cancel(ctx, j.ID))
	l.waitJob(j.ID)
	if _, err := l.eng.jobForToken(ctx, l.eng.AgentToken(j.ID)); err == nil {
		t.Error("token of a finished job accepted")
	}
}
