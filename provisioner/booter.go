package provisioner

import (
	"context"
	"fmt"
	"strings"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

// Boot implements netboot.Booter: a machine whose job needs the agent
// boots the agent's kernel and initramfs, with the service URL and a
// job-scoped token on its command line; a deployed machine boots from its
// disk; anything else gets no boot options. It reads only the inventory's
// boot view, in memory.
func (e *Engine) Boot(ctx context.Context, c netboot.Client) (netboot.Boot, error) {
	entry, ok := e.inv.BootView().Lookup(c.MAC)
	if !ok {
		return netboot.Boot{Kind: netboot.BootNone}, nil
	}
	return e.bootFor(entry, c)
}

// bootFor decides what a known machine boots, from its boot view entry.
func (e *Engine) bootFor(entry inventory.BootEntry, c netboot.Client) (netboot.Boot, error) {
	j := entry.Job
	if j.ID == "" {
		if entry.State == inventory.MachineDeployed {
			return netboot.Boot{Kind: netboot.BootLocal, Machine: entry.Machine}, nil
		}
		return netboot.Boot{Kind: netboot.BootNone, Machine: entry.Machine}, nil
	}
	if e.inv.Hold() != nil {
		// A paused job hands out no agent token: on hold (a restored copy
		// beside the original), the job's machine is the original's to
		// boot.
		return netboot.Boot{Kind: netboot.BootNone, Machine: entry.Machine}, nil
	}
	if j.Cancelled || !needsAgent(j.Step) {
		if j.Kind == inventory.JobProvision {
			return netboot.Boot{Kind: netboot.BootLocal, Machine: entry.Machine}, nil
		}
		return netboot.Boot{Kind: netboot.BootNone, Machine: entry.Machine}, nil
	}
	// The script carries the job's token: only once the machine is
	// really netbooting for this job.
	e.noteNetboot(j, c)
	if e.cfg.ScriptAfterDHCP && !isDHCP(c) && !e.netbooting(j.ID) {
		return netboot.Boot{Kind: netboot.BootNone}, nil
	}
	if e.cfg.BootKernelURL == "" || e.cfg.BootInitrdURL == "" {
		return netboot.Boot{}, fmt.Errorf("machine %s needs the agent but no boot environment is registered: build the agent's boot environment first", entry.Machine)
	}
	params := []string{
		// The last console= becomes /dev/console, where the agent logs:
		// the serial console, which BMCs (SOL) and QEMU capture.
		"console=tty0", "console=ttyS0,115200",
		"metalhall.url=" + e.cfg.ServiceURL,
		"metalhall.token=" + e.AgentToken(j.ID),
		"metalhall.mac=" + c.MAC.String(),
	}
	if e.cfg.ExtraKernelParams != "" {
		params = append(params, e.cfg.ExtraKernelParams)
	}
	return netboot.Boot{Kind: netboot.BootProvision, Kernel: e.cfg.BootKernelURL,
		Initrds: []string{e.cfg.BootInitrdURL}, Cmdline: strings.Join(params, " "), Machine: entry.Machine}, nil
}

var _ netboot.Booter = (*Engine)(nil)
