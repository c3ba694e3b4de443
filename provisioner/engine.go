// Package provisioner is metalhall's lifecycle engine: durable jobs that
// commission, provision (and reimage), release (wipe) and power machines,
// a scheduler that bounds how much runs at once, the endpoints the in-RAM
// agent calls home to, the metadata service of installed machines, and the
// netboot Booter that decides what a machine boots.
//
// Every step of a job is persisted before the next begins. After a crash
// the engine reloads unfinished jobs and resumes each from its first step
// not done; BMC steps are idempotent and simply run again, and waits keep
// their deadlines. A job taken over from another instance (Config.Claims)
// resumes the same way, except at a step that needs the agent: the agent
// calls home to the instance whose boot script it got, so the machine is
// booted again from set-pxe (startStep).
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
)

// BMC is the out-of-band control the engine needs (package bmc, adapted
// with the machine's unsealed credentials).
type BMC interface {
	// SetBootDevice sets the boot device, once or persistently.
	SetBootDevice(ctx context.Context, m *inventory.Machine, device inventory.BootDevice, persistent bool) error
	// SetPower runs a power action and returns when it took effect.
	SetPower(ctx context.Context, m *inventory.Machine, action inventory.PowerAction) error
	// PowerState reads "on", "off" or "unknown".
	PowerState(ctx context.Context, m *inventory.Machine) (string, error)
}

// Config tunes the engine. Zero values take the defaults in brackets.
type Config struct {
	MaxJobs         int // jobs running at once [64]
	MaxPerRack      int // jobs running at once in one rack [8]
	MaxImageStreams int // provision jobs streaming images at once [32]

	BootTimeout       time.Duration // power cycle → agent calls home [5m]
	InspectTimeout    time.Duration // agent up → inspection report [10m]
	StallTimeout      time.Duration // longest silence of the agent while it writes or wipes [5m]
	MetadataTimeout   time.Duration // power cycle to disk → installed OS fetches metadata [15m]
	BootRetries       int           // re-PXE attempts when a machine is not seen [1]
	TokenTTL          time.Duration // life of an agent token after its job starts [6h]
	PollInterval      time.Duration // how often waits look at the job when no change wakes them [5s]
	Logger            *slog.Logger
	TokenKey          []byte // HMAC key for job-scoped agent tokens (32 bytes)
	Profiles          ProfileSource
	Images            ImageSource
	Now               func() time.Time
	ServiceURL        string // base URL machines reach the service at
	BootKernelURL     string // the agent's kernel
	BootInitrdURL     string // the agent's initramfs
	ExtraKernelParams string

	// NetbootReady says why the service cannot netboot machines now (no
	// boot environment, DHCP off), or nil when it can. Jobs that need a
	// netboot are refused at once while it fails. nil: no check.
	NetbootReady func(context.Context) error
	// AddressOwner is the DHCP view of who holds which address; the
	// default AgentSource uses it for machines without a reservation.
	AddressOwner AddressOwner
	// AgentSource decides whether a request may use a job's agent token
	// from its source address [MachineAddress(AddressOwner)].
	AgentSource AgentSource
	// Sealer seals provision jobs' SSH keys and user data at rest; nil
	// stores them in clear.
	Sealer *seal.Sealer
	// ScriptAfterDHCP serves the boot script (it carries the job's token)
	// only after the machine's PXE DHCP request for the job was seen. Set
	// it when this service answers DHCP; without DHCP it never sees one.
	ScriptAfterDHCP bool

	// EnergiseWait bounds how long a commission, provision or release
	// step waits for its rack's power budget to allow a power-on [1h].
	EnergiseWait time.Duration

	// Claims shares the jobs with other instances on one inventory: a job
	// runs here only once claimed, and stops when the claims are lost.
	// nil: this instance owns every job.
	Claims JobClaims
}

func (c *Config) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxJobs, 64)
	def(&c.MaxPerRack, 8)
	def(&c.MaxImageStreams, 32)
	defd(&c.BootTimeout, 5*time.Minute)
	defd(&c.InspectTimeout, 10*time.Minute)
	defd(&c.StallTimeout, 5*time.Minute)
	defd(&c.MetadataTimeout, 15*time.Minute)
	defd(&c.TokenTTL, 6*time.Hour)
	defd(&c.PollInterval, 5*time.Second)
	defd(&c.EnergiseWait, time.Hour)
	if c.BootRetries < 0 {
		c.BootRetries = 0
	} else if c.BootRetries == 0 {
		c.BootRetries = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.AgentSource == nil {
		c.AgentSource = MachineAddress(c.AddressOwner)
	}
}

// Engine runs jobs.
type Engine struct {
	inv     *inventory.Store
	bmc     BMC
	cfg     Config
	log     *slog.Logger
	started time.Time

	wake chan struct{} // a job was submitted or cancelled

	netboot netbootSeen // PXE DHCP requests seen per job

	// heldRounds counts scheduling rounds that started nothing because
	// the store is on hold (a restored copy): the metric says the
	// scheduler looked and left the jobs paused.
	heldRounds atomic.Uint64
	captures   captures // the serial consoles of running jobs (console.go)
	// handed is the inspection an agent sent, decoded once, on its way
	// to the check-profile step (inspections.go).
	handed inspections

	claimsLost atomic.Uint64 // times Config.Claims were lost

	mu      sync.Mutex
	running map[string]bool // job IDs with a worker (or being claimed for one)
	foreign map[string]bool // job IDs another instance holds (Config.Claims)
	perRack map[string]int
	gates   map[string]chan struct{}    // per rack: see rackGate
	pending map[string]map[string]int64 // rack → machine → rated W of its power-on under way
	streams int
	wg      sync.WaitGroup

	// burninStreams bounds the burn-in throughput streams served at once
	// (MaxImageStreams): they share the provisioning network with images.
	burninStreams chan struct{}
}

// New returns an engine. Call Run to start it.
func New(inv *inventory.Store, bmc BMC, cfg Config) (*Engine, error) {
	cfg.defaults()
	if len(cfg.TokenKey) < 16 {
		return nil, errors.New("provisioner: TokenKey of at least 16 bytes is required")
	}
	return &Engine{inv: inv, bmc: bmc, cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1),
		running: map[string]bool{}, foreign: map[string]bool{}, perRack: map[string]int{}, burninStreams: make(chan struct{}, cfg.MaxImageStreams),
		gates: map[string]chan struct{}{}, pending: map[string]map[string]int64{}}, nil
}

// Request asks for a job.
type Request struct {
	Kind        inventory.JobKind
	Machine     string
	Actor       string
	Image       string                // provision
	SSHKeys     []string              // provision
	UserData    string                // provision
	WipeMode    string                // release: certified (default), full or fast
	PowerAction inventory.PowerAction // power
	// ForcePower takes the job's power-ons past the energisation
	// interlock (staff only; the API checks who asks).
	ForcePower bool

	// ActorRole is the role of the token that asked: tenants may cancel
	// only what tenants asked for.
	ActorRole inventory.Role
}

// plan is the steps of each kind of job, in order, and the machine state
// it moves through.
func plan(kind inventory.JobKind) ([]string, inventory.MachineState) {
	switch kind {
	case inventory.JobCommission:
		return []string{stepBMCCheck, stepCheckSEL, stepSetPXE, stepPowerCycle, stepWaitAgent, stepInspect, stepCheckProfile, stepPowerLimit, stepPowerOff}, inventory.MachineCommissioning
	case inventory.JobProvision:
		return []string{stepPowerLimit, stepSetPXE, stepPowerCycle, stepWaitAgent, stepWriteImage, stepSetDiskBoot, stepBootDisk, stepWaitMetadata}, inventory.MachineProvisioning
	case inventory.JobRelease:
		return []string{stepSetPXE, stepPowerCycle, stepWaitAgent, stepWipe, stepPowerOff}, inventory.MachineDeprovisioning
	case inventory.JobPower:
		return []string{stepPower}, ""
	}
	return nil, ""
}

// Submit records a job; the scheduler starts it when the limits allow.
func (e *Engine) Submit(ctx context.Context, r Request) (*inventory.Job, error) {
	steps, to := plan(r.Kind)
	if steps == nil {
		return nil, &inventory.ValidationError{Field: "kind", Msg: fmt.Sprintf("%q is not a job kind", r.Kind)}
	}
	switch r.Kind {
	case inventory.JobProvision:
		if r.Image == "" {
			return nil, &inventory.ValidationError{Field: "image", Msg: "is required"}
		}
	case inventory.JobRelease:
		switch wire.WipeMode(r.WipeMode) {
		case "":
			r.WipeMode = string(wire.WipeCertified)
		case wire.WipeCertified, wire.WipeFast, wire.WipeFull:
		default:
			return nil, &inventory.ValidationError{Field: "wipe_mode", Msg: fmt.Sprintf("%q: use certified (the default), full or fast", r.WipeMode)}
		}
	case inventory.JobPower:
		if _, err := inventory.ParsePowerAction(string(r.PowerAction)); err != nil {
			return nil, err
		}
	}
	// A service on hold (a restored copy) takes no new work either: a job
	// queued now would drive its BMC the moment the hold is lifted.
	if err := e.inv.CheckHold(); err != nil {
		return nil, err
	}
	if err := e.canStart(ctx, r); err != nil {
		return nil, err
	}
	j := inventory.Job{Machine: r.Machine, Kind: r.Kind, Actor: r.Actor, ActorRole: r.ActorRole, Image: r.Image, SSHKeys: r.SSHKeys,
		UserData: r.UserData, WipeMode: r.WipeMode, PowerAction: r.PowerAction, ForcePower: r.ForcePower}
	for _, s := range steps {
		j.Steps = append(j.Steps, inventory.JobStep{Name: s})
	}
	if err := sealSecrets(e.cfg.Sealer, &j); err != nil {
		return nil, err
	}
	// The token ID goes in the event's actor, not its text, so that views
	// for tenants can leave staff token IDs out.
	out, err := e.inv.StartJobRecording(ctx, j, to, func(out *inventory.Job) inventory.Event {
		return inventory.Event{Actor: orDash(r.Actor), Role: string(r.ActorRole), Subject: "machine/" + out.Machine, Tenancy: out.Tenancy,
			Action: "job.queued", Detail: fmt.Sprintf("%s job %s queued", out.Kind, out.ID)}
	})
	if err != nil {
		return nil, err
	}
	e.poke()
	return out, nil
}

// Cancel asks a job to stop. The machine ends failed with reason
// "cancelled" and the step it was at (it may be half-imaged or half-wiped:
// only a new job makes it trustworthy again).
func (e *Engine) Cancel(ctx context.Context, id string) (*inventory.Job, error) {
	j, err := e.inv.UpdateJobOnly(ctx, id, func(j *inventory.Job) error {
		j.CancelRequested = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.poke()
	return j, nil
}

// Resume lifts the store's hold (see inventory.Hold): the paused jobs run
// again from the step each was at, and BMCs may be contacted. Each paused
// job's machine gets an event saying who resumed it.
func (e *Engine) Resume(ctx context.Context, actor string) (*inventory.Hold, []inventory.QueuedJob, error) {
	paused := e.inv.BootView().Queue()
	h, err := e.inv.LiftHold(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, q := range paused {
		j, err := e.inv.Job(ctx, q.ID)
		if err != nil {
			continue
		}
		ev := inventory.Event{Actor: orDash(actor), Role: string(inventory.RoleAdmin), Subject: "machine/" + j.Machine, Tenancy: j.Tenancy,
			Action: "job.resumed", Detail: fmt.Sprintf("%s job %s resumed at %s: the hold (%s) was lifted", j.Kind, j.ID, orDash(j.StepName()), h.Reason)}
		if _, err := e.inv.AppendEvent(context.WithoutCancel(ctx), ev); err != nil {
			e.log.Error("recording event", "machine", j.Machine, "err", err)
		}
	}
	e.log.Info("hold lifted: paused jobs run again", "jobs", len(paused), "by", actor)
	e.poke()
	return h, paused, nil
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run resumes unfinished jobs and schedules new ones until ctx ends. It
// returns after every worker has stopped; their jobs stay where they were
// persisted and resume on the next Run.
func (e *Engine) Run(ctx context.Context) error {
	e.started = e.cfg.Now()
	if h := e.inv.Hold(); h != nil {
		e.log.Warn("on hold: no job runs and no BMC is contacted until an admin resumes the jobs",
			"reason", h.Reason, "since", h.Since, "unfinished_jobs", len(e.inv.BootView().Queue()))
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	r := &rounds{tick: tick.C}
	for e.runClaimed(ctx, r) {
	}
	return nil
}

// rounds is the scheduling loop's state across claims.
type rounds struct {
	tick    <-chan time.Time
	ticks   int
	failing bool // the last round's error was logged
}

// runClaimed schedules jobs under one set of claims (all of them, for a
// single instance) until ctx ends (false: Run returns, every worker
// stopped) or the claims are lost (true: every worker of theirs stopped,
// run again). Workers run under a context that ends in both cases:
// another instance may take lost jobs over, and they must not be driven
// from two places.
func (e *Engine) runClaimed(ctx context.Context, r *rounds) bool {
	jobs, stop := context.WithCancel(ctx)
	defer stop()
	lost, orphaned := e.lost(), e.orphaned()
	for {
		err := e.schedule(jobs)
		switch {
		case err != nil && ctx.Err() == nil && !r.failing:
			e.log.Error("scheduling jobs", "err", err)
			r.failing = true
		case err == nil && r.failing:
			e.log.Info("scheduling jobs again")
			r.failing = false
		}
		select {
		case <-ctx.Done():
			e.wg.Wait()
			return false
		case <-lost:
			stop()
			e.claimsLost.Add(1)
			e.mu.Lock()
			n := len(e.running)
			e.mu.Unlock()
			e.log.Warn("this instance lost its job claims: its jobs stop where they are persisted, another instance may take them over", "jobs", n)
			e.wg.Wait()
			e.forgetForeign()
			return true
		case <-orphaned:
			e.forgetForeign()
		case <-e.wake:
		case <-r.tick:
			// A fresh look at the jobs others held now and then, in case
			// an orphan notice was missed; the claims answer it from
			// their own view.
			if r.ticks++; r.ticks%30 == 0 {
				e.forgetForeign()
			}
		}
	}
}

// schedule starts the oldest waiting jobs that fit within the limits. It
// reads the queue the inventory keeps in memory: no job is decoded.
func (e *Engine) schedule(ctx context.Context) error {
	if e.inv.Hold() != nil {
		// Paused, not failed: the jobs stay where they were persisted and
		// run from there once the hold is lifted (Resume).
		e.heldRounds.Add(1)
		return nil
	}
	jobs := e.inv.BootView().Queue()
	for {
		picked := e.pick(jobs)
		if e.cfg.Claims == nil {
			for _, j := range picked {
				e.start(ctx, j)
			}
			return nil
		}
		if len(picked) == 0 {
			return nil
		}
		// The claims are asked outside e.mu: a claim is a round trip.
		// Slots of jobs another instance runs go to the next ones in
		// the queue, in this same round.
		refused, err := e.claim(ctx, picked)
		if err != nil || refused == 0 {
			return err
		}
	}
}

// pick reserves a slot for each of the oldest waiting jobs that fit within
// the limits.
func (e *Engine) pick(jobs []inventory.QueuedJob) []inventory.QueuedJob {
	e.mu.Lock()
	defer e.mu.Unlock()
	var picked []inventory.QueuedJob
	for _, j := range jobs {
		if e.running[j.ID] || e.foreign[j.ID] {
			continue
		}
		if len(e.running) >= e.cfg.MaxJobs {
			break
		}
		stream := j.Kind == inventory.JobProvision
		if e.perRack[j.Rack] >= e.cfg.MaxPerRack || (stream && e.streams >= e.cfg.MaxImageStreams) {
			continue
		}
		e.running[j.ID] = true
		e.perRack[j.Rack]++
		if stream {
			e.streams++
		}
		picked = append(picked, j)
	}
	return picked
}

// unreserve hands back the slot pick reserved. e.mu is held.
func (e *Engine) unreserve(j inventory.QueuedJob) {
	delete(e.running, j.ID)
	e.perRack[j.Rack]--
	if j.Kind == inventory.JobProvision {
		e.streams--
	}
}

// start runs a picked job in a worker of its own.
func (e *Engine) start(ctx context.Context, j inventory.QueuedJob) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.work(ctx, j.ID)
		e.released(ctx, j.ID)
		e.mu.Lock()
		e.unreserve(j)
		e.mu.Unlock()
		e.poke()
	}()
}

// QueuePosition is a job's place among the jobs waiting for a slot (1 is
// next), or 0 when it is running (here, or on the instance that holds
// it) or finished.
func (e *Engine) QueuePosition(ctx context.Context, id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	pos := 0
	for j := range e.inv.BootView().Queued() {
		if e.running[j.ID] || e.foreign[j.ID] {
			continue
		}
		pos++
		if j.ID == id {
			return pos
		}
	}
	return 0
}

// event records an event of a job's step. It is written behind: every
// one is followed by a write of the job (the step's end, a rewind, the
// job's end) whose commit carries it, or by a wait, after which it is
// flushed on its own (JobWriteBehind). A crash before that commit loses
// it with the step's outcome, and the step, run again, says it again.
func (e *Engine) event(ctx context.Context, j *inventory.Job, action, detail string) {
	if err := e.inv.AppendEventBehind(jobEvent(j, action, detail)); err != nil {
		e.log.Error("recording event", "machine", j.Machine, "err", err)
	}
}

// jobEvent is an event of the provisioner about a job's machine, in the
// job's tenancy.
func jobEvent(j *inventory.Job, action, detail string) inventory.Event {
	outcome := ""
	switch action {
	case "job.succeeded":
		outcome = "ok"
	case "job.failed", "step.failed":
		outcome = "failed"
	case "job.cancelled":
		outcome = "refused"
	}
	return inventory.Event{Actor: "provisioner", Subject: "machine/" + j.Machine, Tenancy: j.Tenancy, Action: action, Outcome: outcome, Detail: detail}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
