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
// disk; anything else gets no boot options.
func (e *Engine) Boot(ctx context.Context, c netboot.Client) (netboot.Boot, error) {
	entry, ok := e.inv.LookupMAC(c.MAC)
	if !ok {
		return netboot.Boot{Kind: netboot.BootNone}, nil
	}
	j, err := e.inv.ActiveJob(ctx, entry.Machine)
	if err != nil {
		m, merr := e.inv.Machine(ctx, entry.Machine)
		if merr == nil && m.State == inventory.MachineDeployed {
			return netboot.Boot{Kind: netboot.BootLocal}, nil
		}
		return netboot.Boot{Kind: netboot.BootNone}, nil
	}
	if j.CancelRequested || !needsAgent(j.StepName()) {
		if j.Kind == inventory.JobProvision {
			return netboot.Boot{Kind: netboot.BootLocal}, nil
		}
		return netboot.Boot{Kind: netboot.BootNone}, nil
	}
	// The script carries the job's token: only once the machine is
	// really netbooting for this job.
	e.noteNetboot(j, c)
	if e.cfg.ScriptAfterDHCP && !isDHCP(c) && !e.netbooting(j) {
		return netboot.Boot{Kind: netboot.BootNone}, nil
	}
	if e.cfg.BootKernelURL == "" || e.cfg.BootInitrdURL == "" {
		return netboot.Boot{}, fmt.Errorf("machine %s needs the agent but no boot environment is registered: run 'metalhall bootenv build'", entry.Machine)
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
		Initrds: []string{e.cfg.BootInitrdURL}, Cmdline: strings.Join(params, " ")}, nil
}

var _ netboot.Booter = (*Engine)(nil)
