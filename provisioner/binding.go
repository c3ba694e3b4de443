package provisioner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

// A job's agent token is bound to its machine: it is handed out only once
// the machine is really netbooting for the job, used only from the
// machine's own address, and the agent's "done" is believed only with the
// work the step needs behind it. Each check is one small function here, so
// that the boot view (MAC → machine, address, job) can take them over.

// AddressOwner says which MAC an address was given to (the DHCP view:
// reservations, leases, and addresses learned in proxy mode).
type AddressOwner func(ctx context.Context, ip netip.Addr) (net.HardwareAddr, bool)

// AgentSource decides whether a request from addr may use the token of a
// job on machine m.
type AgentSource func(ctx context.Context, m *inventory.Machine, addr netip.Addr) error

// ErrWrongSource is an agent token used from an address that is not its
// machine's.
var ErrWrongSource = errors.New("agent token used from an address that is not its machine's")

// MachineAddress is the default AgentSource: addr must be the machine's
// reserved address, or one that owner says was given to one of its MACs.
func MachineAddress(owner AddressOwner) AgentSource {
	return func(ctx context.Context, m *inventory.Machine, addr netip.Addr) error {
		if m.IP != "" && m.IP == addr.Unmap().String() {
			return nil
		}
		if owner != nil {
			if mac, ok := owner(ctx, addr.Unmap()); ok && slices.Contains(m.MACs, mac.String()) {
				return nil
			}
		}
		return fmt.Errorf("%w: machine %q is not known at %s", ErrWrongSource, m.Name, addr)
	}
}

// checkSource applies the engine's AgentSource to a request for job j.
func (e *Engine) checkSource(r *http.Request, j *inventory.Job) error {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return fmt.Errorf("%w: no source address", ErrWrongSource)
	}
	m, err := e.inv.Machine(r.Context(), j.Machine)
	if err != nil {
		return err
	}
	return e.cfg.AgentSource(r.Context(), m, ap.Addr())
}

// netbootSeen remembers, per job, when its machine last sent a PXE DHCP
// request: the boot script, which carries the job's token, is served only
// after one made since the job's power cycle began — not while the old OS
// is still up during set-pxe.
type netbootSeen struct {
	mu   sync.Mutex
	seen map[string]time.Time // job ID → last PXE DHCP request
}

// netbootSeenMax bounds the map: one entry per running job is plenty.
const netbootSeenMax = 1 << 16

// isDHCP tells a DHCP request, which carries the PXE vendor class, from a
// boot-script or file fetch (netboot's HTTP side asks with no vendor class).
func isDHCP(c netboot.Client) bool { return c.VendorClass != "" }

func (e *Engine) noteNetboot(j inventory.BootJob, c netboot.Client) {
	if !isDHCP(c) {
		return
	}
	switch j.Step {
	case stepPowerCycle, stepWaitAgent, stepInspect, stepWriteImage, stepWipe:
	default:
		return // set-pxe: the machine has not been reset yet
	}
	e.netboot.mu.Lock()
	defer e.netboot.mu.Unlock()
	if e.netboot.seen == nil || len(e.netboot.seen) >= netbootSeenMax {
		e.netboot.seen = map[string]time.Time{}
	}
	e.netboot.seen[j.ID] = e.cfg.Now()
}

// netbooting reports whether the machine of job jobID has sent a PXE DHCP
// request since the job's power cycle began: noteNetboot records one only
// from the power-cycle step on, never during set-pxe, while the old OS
// may still be up.
func (e *Engine) netbooting(jobID string) bool {
	e.netboot.mu.Lock()
	defer e.netboot.mu.Unlock()
	_, ok := e.netboot.seen[jobID]
	return ok
}

// errEarlierBoot refuses a report that no call-home of this boot's agent
// came before.
var errEarlierBoot = errors.New("report refused: no agent has fetched its task since the machine was last booted for this job (a report from an agent of an earlier boot)")

// fromThisBoot refuses an agent's progress or done while the job waits for
// its machine to boot (again): every agent fetches its task first, so a
// report before any call-home is from the agent of an earlier boot — one
// still running on the machine after its job was rewound to boot it
// again, as when another instance takes the job over. Believed, its
// "done" would end the next boot's write or wipe before it began. It
// retries until the power cycle ends it.
//
// Only jobs run by instances sharing the work (Job.Instance set) are
// checked: a single instance never reboots a machine under a running agent
// on a restart, so its jobs keep the earlier behaviour.
func fromThisBoot(j *inventory.Job) error {
	if j.Instance != "" && j.AgentSeenAt.IsZero() {
		return errEarlierBoot
	}
	return nil
}

// doneAccepted refuses an agent's "done, ok" that the work behind it does
// not bear out: the agent must have sent this boot's inspection (it names
// the disks it works on), and an image write must have reported progress.
// The agent retries a refused report, so a report racing its own progress
// is accepted a moment later.
func doneAccepted(j *inventory.Job, m *inventory.Machine) error {
	if m.InspectedAt.IsZero() || m.InspectedAt.Before(j.AgentSeenAt) {
		return errors.New("done refused: the agent has sent no inspection since it fetched its task")
	}
	if j.Kind == inventory.JobProvision && j.Progress.Bytes <= 0 {
		return errors.New("done refused: the agent has reported no bytes written")
	}
	return nil
}
