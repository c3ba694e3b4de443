package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// Provisioner is what the API needs of the lifecycle engine.
type Provisioner interface {
	Submit(ctx context.Context, r provisioner.Request) (*inventory.Job, error)
	Cancel(ctx context.Context, id string) (*inventory.Job, error)
	QueuePosition(ctx context.Context, id string) int
	// Resume lifts the hold of a restored copy (inventory.Hold).
	Resume(ctx context.Context, actor string) (*inventory.Hold, []inventory.QueuedJob, error)
}

// BMC is the out-of-band control the API uses directly (the rest goes
// through jobs): a machine's power state, and its boot device.
type BMC interface {
	PowerState(ctx context.Context, m *inventory.Machine) (string, error)
	SetBootDevice(ctx context.Context, m *inventory.Machine, device inventory.BootDevice, persistent bool) error
}

// BootDeviceRequest sets the device a machine boots from next.
type BootDeviceRequest struct {
	Device     string `json:"device"` // pxe, disk, bios, cdrom
	Persistent bool   `json:"persistent,omitempty"`
}

type ProvisionRequest struct {
	Image    string   `json:"image"`
	SSHKeys  []string `json:"ssh_keys,omitempty"`
	UserData string   `json:"user_data,omitempty"`
}

type ReleaseRequest struct {
	WipeMode string `json:"wipe_mode,omitempty"` // certified (default), full or fast
}

type PowerRequest struct {
	Action string `json:"action"` // on, off, cycle, status
	// Force powers on a machine even when that takes its rack past its
	// power budget by measured draw (staff only).
	Force bool `json:"force,omitempty"`
}

// PowerStatus answers a power status request.
type PowerStatus struct {
	Machine string `json:"machine"`
	Power   string `json:"power"`
}

// Job is a job as the API shows it.
type Job struct {
	inventory.Job
	QueuePosition int `json:"queue_position,omitempty"`
	// Paused: the job is unfinished and the service is on hold (a
	// restored copy not yet resumed): it does not run until resumed.
	Paused bool `json:"paused,omitempty"`
}

// RackCommission answers a rack commission: the jobs started, and the
// machines left alone with why.
type RackCommission struct {
	Rack    string            `json:"rack"`
	Jobs    []Job             `json:"jobs"`
	Skipped map[string]string `json:"skipped,omitempty"`
}

var errNoProvisioner = &httpError{http.StatusServiceUnavailable, "unavailable",
	"the provisioner is not running in this service: start 'metalhall serve' with netboot configured"}

func (s *Server) jobRoutes() []route {
	return []route{
		{method: "POST", pattern: "/api/v1/machines/{name}/commission", action: "machine.commission", summary: "Commission a machine: BMC check, PXE, inspection, profile check", roles: staff, scope: scopeMachine, reply: Job{}, handle: s.commissionMachine},
		{method: "POST", pattern: "/api/v1/machines/{name}/provision", action: "machine.provision", summary: "Image a machine (or reimage a deployed one)", roles: everyone, scope: scopeMachine, body: ProvisionRequest{}, reply: Job{}, handle: s.provisionMachine},
		{method: "POST", pattern: "/api/v1/machines/{name}/release", action: "machine.release", summary: "Wipe a machine and make it available again", roles: everyone, scope: scopeMachine, body: ReleaseRequest{}, reply: Job{}, handle: s.releaseMachine},
		{method: "POST", pattern: "/api/v1/machines/{name}/power", action: "machine.power", summary: "Power on, off or cycle a machine, or read its power state", roles: everyone, scope: scopeMachine, body: PowerRequest{}, reply: Job{}, replies: []any{PowerStatus{}}, handle: s.powerMachine},
		{method: "POST", pattern: "/api/v1/machines/{name}/boot-device", action: "machine.boot-device", summary: "Set the device a machine boots from (once, or persistently)", roles: staff, scope: scopeMachine, body: BootDeviceRequest{}, reply: BootDeviceRequest{}, handle: s.setBootDevice},
		{method: "GET", pattern: "/api/v1/machines/{name}/job", action: "machine.job", summary: "A machine's current (or last) job with its steps and queue position", roles: everyone, scope: scopeMachine, reply: Job{}, handle: s.machineJob},
		{method: "POST", pattern: "/api/v1/machines/{name}/cancel", action: "machine.cancel", summary: "Cancel a machine's running job", roles: everyone, scope: scopeMachine, reply: Job{}, handle: s.cancelJob},
		{method: "POST", pattern: "/api/v1/racks/{name}/commission", action: "rack.commission", summary: "Commission every machine of a rack", roles: staff, scope: scopeRack, reply: RackCommission{}, handle: s.commissionRack},
	}
}

func (s *Server) submit(c *call, r provisioner.Request) (int, any, error) {
	if s.prov == nil {
		return 0, nil, errNoProvisioner
	}
	r.Machine, r.Actor, r.ActorRole = c.r.PathValue("name"), c.p.TokenID, c.p.Role
	if c.p.Role == inventory.RoleTenant {
		m, err := s.inv.Machine(c.ctx(), r.Machine)
		if err != nil {
			return 0, nil, err
		}
		if err := c.checkTenantJob(m, r.Kind); err != nil {
			return 0, nil, err
		}
	}
	j, err := s.prov.Submit(c.ctx(), r)
	if err != nil {
		return 0, nil, err
	}
	c.detail = fmt.Sprintf("%s job %s", j.Kind, j.ID)
	if r.ForcePower {
		c.detail += " (power interlock forced)"
	}
	return http.StatusAccepted, s.jobView(c, j), nil
}

// jobView hides a tenant's user data and keys from staff other than
// admins, and adds the queue position.
func (s *Server) jobView(c *call, j *inventory.Job) Job {
	out := Job{Job: *j}
	out.Sealed = nil
	if c.p.Role == inventory.RoleTechnician {
		out.SSHKeys, out.UserData = nil, ""
	} else if keys, userData, err := provisioner.OpenSecrets(s.sealer, j); err == nil {
		out.SSHKeys, out.UserData = keys, userData
	} else {
		s.log.Error("opening a job's keys and user data", "job", j.ID, "err", err)
	}
	if c.p.Role == inventory.RoleTenant {
		if j.ActorRole != inventory.RoleTenant {
			out.Actor = staffActor
		}
		if m, err := s.inv.Machine(c.ctx(), j.Machine); err == nil {
			hideBMCInJob(m, &out)
		}
		out.Instance = "" // a control node's host name (hideInstances)
	}
	if s.prov != nil && !j.State.Finished() {
		out.QueuePosition = s.prov.QueuePosition(c.ctx(), j.ID)
	}
	if !j.State.Finished() && s.inv.Hold() != nil {
		out.Paused, out.QueuePosition = true, 0
	}
	return out
}

func (s *Server) commissionMachine(c *call) (int, any, error) {
	force, err := forcePower(c)
	if err != nil {
		return 0, nil, err
	}
	return s.submit(c, provisioner.Request{Kind: inventory.JobCommission, ForcePower: force})
}

// forcePower reads the force_power query value: staff may take a job's
// power-ons past the energisation interlock (the rack's power budget by
// measured draw). The job's audit detail says so (see submit).
func forcePower(c *call) (bool, error) {
	v := c.r.URL.Query().Get("force_power")
	if v == "" {
		return false, nil
	}
	force, err := strconv.ParseBool(v)
	if err != nil {
		return false, &inventory.ValidationError{Field: "force_power", Msg: fmt.Sprintf("%q is not true or false", v)}
	}
	if force && c.p.Role == inventory.RoleTenant {
		return false, &httpError{http.StatusForbidden, "forbidden", "only staff may force a power-on past the rack's power budget"}
	}
	return force, nil
}

func (s *Server) provisionMachine(c *call) (int, any, error) {
	var in ProvisionRequest
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	if in.Image == "" {
		return 0, nil, &inventory.ValidationError{Field: "image", Msg: "is required: name an image from 'metalhall image list'"}
	}
	img, err := s.provisionImage(c, c.r.PathValue("name"), in.Image)
	if err != nil {
		return 0, nil, err
	}
	// The job names the image by its ref, so what the name meant now is
	// what gets written, and no later image of the same name elsewhere
	// changes it.
	in.Image = img.Ref()
	if len(in.UserData) > 64<<10 {
		return 0, nil, &inventory.ValidationError{Field: "user_data", Msg: "is larger than 64 KiB"}
	}
	force, err := forcePower(c)
	if err != nil {
		return 0, nil, err
	}
	return s.submit(c, provisioner.Request{Kind: inventory.JobProvision, Image: in.Image, SSHKeys: in.SSHKeys, UserData: in.UserData, ForcePower: force})
}

// provisionImage resolves the image a machine is to be provisioned with.
// A bare name means what it means to the machine's tenant (its own image
// first, then a shared one), whoever asks: staff imaging a tenant's
// machine get what the tenant would. A tenant's private image is never
// written to a machine that is not that tenant's.
func (s *Server) provisionImage(c *call, machine, name string) (*inventory.Image, error) {
	m, err := s.inv.Machine(c.ctx(), machine)
	if err != nil {
		return nil, err
	}
	var img *inventory.Image
	if m.Tenant != "" && !strings.Contains(name, "/") {
		img, err = s.inv.ImageFor(c.ctx(), m.Tenant, name)
		if errors.Is(err, inventory.ErrNotFound) {
			err = notFound("image", name)
		}
	} else {
		img, err = s.resolveImage(c.ctx(), c.p, name)
	}
	if err != nil {
		return nil, err
	}
	if img.Tenant != "" && img.Tenant != m.Tenant {
		// Only staff get here: a tenant resolves only its own and shared
		// images, and provisions only its own machines.
		return nil, &inventory.ConflictError{Msg: fmt.Sprintf("image %q is private to tenant %q, and machine %q is not that tenant's: choose a shared image or one of the machine's tenant's", img.Ref(), img.Tenant, machine)}
	}
	return img, nil
}

func (s *Server) releaseMachine(c *call) (int, any, error) {
	var in ReleaseRequest
	if c.r.ContentLength != 0 {
		if err := c.decode(&in); err != nil {
			return 0, nil, err
		}
	}
	force, err := forcePower(c)
	if err != nil {
		return 0, nil, err
	}
	return s.submit(c, provisioner.Request{Kind: inventory.JobRelease, WipeMode: in.WipeMode, ForcePower: force})
}

func (s *Server) powerMachine(c *call) (int, any, error) {
	var in PowerRequest
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	c.detail = in.Action
	if in.Action == "status" {
		if s.bmc == nil {
			return 0, nil, errNoProvisioner
		}
		m, err := s.inv.Machine(c.ctx(), c.r.PathValue("name"))
		if err != nil {
			return 0, nil, err
		}
		st, err := s.bmc.PowerState(c.ctx(), m)
		if err != nil {
			return 0, nil, bmcFailure(err)
		}
		return http.StatusOK, PowerStatus{Machine: m.Name, Power: st}, nil
	}
	action, err := inventory.ParsePowerAction(in.Action)
	if err != nil {
		return 0, nil, err
	}
	if err := provisioner.CheckPowerOn(c.ctx(), s.inv, c.r.PathValue("name"), action); err != nil {
		return 0, nil, err
	}
	if in.Force && c.p.Role == inventory.RoleTenant {
		return 0, nil, &httpError{http.StatusForbidden, "forbidden", "only staff may force a power-on past the rack's power budget"}
	}
	if in.Force {
		c.detail += " force"
	}
	if (action == inventory.PowerOn || action == inventory.PowerCycle) && !in.Force {
		// The energisation interlock: a machine that is off and would take
		// its rack past its budget stays off. Refused here, at once; the
		// job checks again right before it tells the BMC.
		if err := inventory.EnergisationCheck(c.ctx(), s.inv, c.r.PathValue("name")); err != nil {
			return 0, nil, err
		}
	}
	return s.submit(c, provisioner.Request{Kind: inventory.JobPower, PowerAction: action, ForcePower: in.Force})
}

func (s *Server) setBootDevice(c *call) (int, any, error) {
	var in BootDeviceRequest
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	device, err := inventory.ParseBootDevice(in.Device)
	if err != nil {
		return 0, nil, err
	}
	if s.bmc == nil {
		return 0, nil, errNoProvisioner
	}
	c.detail = fmt.Sprintf("%s persistent=%v", in.Device, in.Persistent)
	m, err := s.inv.Machine(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	if j, err := s.inv.ActiveJob(c.ctx(), m.Name); err == nil {
		return 0, nil, &inventory.BusyError{Machine: m.Name, Job: j}
	}
	if err := s.bmc.SetBootDevice(c.ctx(), m, device, in.Persistent); err != nil {
		return 0, nil, bmcFailure(err)
	}
	return http.StatusOK, in, nil
}

// maxJobWait bounds a long poll of a machine's job.
const maxJobWait = time.Minute

// machineJob answers a machine's current (or last) job. With
// ?wait=DURATION&since=UPDATED_AT it answers once the job has changed
// since the updated_at the caller last saw (at once if it already has),
// or when the duration (at most a minute) passes: a waiting client wakes
// on the job's commit instead of polling.
func (s *Server) machineJob(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	q := c.r.URL.Query()
	if w := q.Get("wait"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d <= 0 {
			return 0, nil, &inventory.ValidationError{Field: "wait", Msg: fmt.Sprintf("%q is not a positive duration (e.g. 30s)", w)}
		}
		since, err := time.Parse(time.RFC3339Nano, q.Get("since"))
		if err != nil {
			return 0, nil, &inventory.ValidationError{Field: "since", Msg: fmt.Sprintf("%q is not a time in RFC 3339 form: pass the updated_at of the job last seen", q.Get("since"))}
		}
		s.waitJobChange(c.ctx(), name, since, min(d, maxJobWait))
	}
	m, err := s.inv.Machine(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	// A tenant sees its own tenancy's newest job only: never one of an
	// earlier tenant of the machine, with its keys and user data.
	j, err := s.inv.ActiveJob(c.ctx(), name)
	if err == nil && !c.jobVisible(j, m) {
		j, err = nil, &inventory.NotFoundError{Kind: "active job of machine", Name: name}
	}
	if errors.Is(err, inventory.ErrNotFound) {
		jobs, lerr := s.inv.MachineJobs(c.ctx(), name)
		if lerr != nil {
			return 0, nil, lerr
		}
		for i := len(jobs) - 1; i >= 0 && j == nil; i-- {
			if c.jobVisible(&jobs[i], m) {
				j = &jobs[i]
			}
		}
		if j == nil {
			return 0, nil, notFound("job of machine", name)
		}
		err = nil
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.jobView(c, j), nil
}

func (s *Server) cancelJob(c *call) (int, any, error) {
	if s.prov == nil {
		return 0, nil, errNoProvisioner
	}
	j, err := s.inv.ActiveJob(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	c.detail = "job " + j.ID
	if c.p.Role == inventory.RoleTenant {
		m, err := s.inv.Machine(c.ctx(), j.Machine)
		if err != nil {
			return 0, nil, err
		}
		if err := c.checkTenantCancel(j, m); err != nil {
			return 0, nil, err
		}
	}
	j, err = s.prov.Cancel(c.ctx(), j.ID)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, s.jobView(c, j), nil
}

func (s *Server) commissionRack(c *call) (int, any, error) {
	if s.prov == nil {
		return 0, nil, errNoProvisioner
	}
	force, err := forcePower(c)
	if err != nil {
		return 0, nil, err
	}
	name := c.r.PathValue("name")
	r, err := s.inv.Rack(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	if r.State != inventory.RackCommissioning {
		if _, err := s.inv.SetRackState(c.ctx(), name, inventory.RackCommissioning); err != nil {
			return 0, nil, err
		}
	}
	ms, err := s.inv.Machines(c.ctx(), inventory.MachineFilter{Rack: name})
	if err != nil {
		return 0, nil, err
	}
	out := RackCommission{Rack: name, Jobs: []Job{}, Skipped: map[string]string{}}
	for _, m := range ms {
		if !inventory.Commissionable(m.State) {
			out.Skipped[m.Name] = fmt.Sprintf("it is %s", m.State)
			continue
		}
		j, err := s.prov.Submit(c.ctx(), provisioner.Request{Kind: inventory.JobCommission, Machine: m.Name, Actor: c.p.TokenID, ActorRole: c.p.Role, ForcePower: force})
		if err != nil {
			out.Skipped[m.Name] = err.Error()
			continue
		}
		out.Jobs = append(out.Jobs, s.jobView(c, j))
	}
	c.detail = fmt.Sprintf("%d machines commissioning, %d skipped", len(out.Jobs), len(out.Skipped))
	if force {
		c.detail += " (power interlock forced)"
	}
	return http.StatusAccepted, out, nil
}

// waitJobChange returns when the machine's active job was updated after
// since, or has ended, or d passes, or ctx ends.
func (s *Server) waitJobChange(ctx context.Context, machine string, since time.Time, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		j, err := s.inv.ActiveJob(ctx, machine)
		if err != nil {
			return // none (it ended), or the store failed: answer now
		}
		changed := s.inv.BootView().JobChanged(j.ID)
		// Read again after taking the channel: a commit between the two
		// reads would otherwise be missed.
		if j, err = s.inv.Job(ctx, j.ID); err != nil || j.State.Finished() || !j.UpdatedAt.Equal(since) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
