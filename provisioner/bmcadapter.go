package provisioner

import (
	"context"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
)

// Machines adapts the bmc package to inventory machines: it unseals a
// machine's BMC password only for the call, and feeds the power-state sync
// from the inventory and back into it. It implements BMC (for the engine),
// api.BMC and bmc.StatusSink.
type Machines struct {
	Inv    *inventory.Store
	Sealer *seal.Sealer
	Ctl    *bmc.Controller
}

// Endpoint is a machine's BMC with its password unsealed.
func (a *Machines) Endpoint(ctx context.Context, m *inventory.Machine) (bmc.Endpoint, error) {
	ep := bmc.Endpoint{Address: m.BMC.Address, Protocol: bmc.Protocol(m.BMC.Protocol), Username: m.BMC.Username}
	if m.BMC.SecretRef == "" {
		return ep, fmt.Errorf("machine %q has no BMC password: enroll it again with its BMC password", m.Name)
	}
	sealed, err := a.Inv.Secret(ctx, m.BMC.SecretRef)
	if err != nil {
		return ep, fmt.Errorf("machine %q: BMC password: %w", m.Name, err)
	}
	pw, err := m.BMC.Credential().Open(a.Sealer, sealed)
	if err != nil {
		return ep, fmt.Errorf("machine %q: BMC password: %w (was the data dir's seal.key replaced?)", m.Name, err)
	}
	ep.Password = string(pw)
	return ep, nil
}

// SetBootDevice sets the boot device in UEFI mode, the mode of every
// current GPU server platform.
func (a *Machines) SetBootDevice(ctx context.Context, m *inventory.Machine, device inventory.BootDevice, persistent bool) error {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return err
	}
	return a.Ctl.SetBootDevice(ctx, ep, bmc.BootOptions{Device: bmcBootDevice[device], Persistent: persistent, UEFI: true})
}

// SetPower runs a power action and waits until the BMC reports it.
func (a *Machines) SetPower(ctx context.Context, m *inventory.Machine, action inventory.PowerAction) error {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return err
	}
	err = a.Ctl.SetPower(ctx, ep, bmcPowerAction[action])
	a.record(ctx, m.Name, err)
	return err
}

// PowerState reads on, off or unknown.
func (a *Machines) PowerState(ctx context.Context, m *inventory.Machine) (string, error) {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return "unknown", err
	}
	st, err := a.Ctl.PowerState(ctx, ep)
	a.record(ctx, m.Name, err)
	return string(st), err
}

// record notes a command's outcome on the machine, so a failing BMC shows
// in `machine list` at once rather than at the next sync.
func (a *Machines) record(ctx context.Context, name string, err error) {
	if err == nil {
		return
	}
	a.Inv.RecordBMCStatus(context.WithoutCancel(ctx), name, inventory.BMCStatus{Power: "unknown", LastError: err.Error(),
		ReadAt: time.Now().UTC()})
}

// BMCTargets lists every machine that is not retired, with its endpoint.
func (a *Machines) BMCTargets(ctx context.Context) ([]bmc.Target, error) {
	ms, err := a.Inv.Machines(ctx, inventory.MachineFilter{})
	if err != nil {
		return nil, err
	}
	out := make([]bmc.Target, 0, len(ms))
	for i := range ms {
		if ms[i].State == inventory.MachineRetired {
			continue
		}
		ep, err := a.Endpoint(ctx, &ms[i])
		if err != nil {
			continue // recorded on the machine when a command needs it
		}
		out = append(out, bmc.Target{Machine: ms[i].Name, Endpoint: ep})
	}
	return out, nil
}

// RecordBMCStatus stores one sync result.
func (a *Machines) RecordBMCStatus(ctx context.Context, machine string, st bmc.Status) error {
	return a.Inv.RecordBMCStatus(ctx, machine, inventory.BMCStatus{Power: string(st.Power), Reachable: st.Reachable,
		LastError: st.LastError, ReadAt: st.ReadAt.UTC()})
}

// The inventory's verbs as package bmc names them. bmc imports no project
// package, so the mapping lives here, in the adapter; a verb missing from
// a map reaches bmc as "" and is refused there.
var (
	bmcPowerAction = map[inventory.PowerAction]bmc.PowerAction{
		inventory.PowerOn: bmc.ActionOn, inventory.PowerOff: bmc.ActionOff, inventory.PowerCycle: bmc.ActionCycle}
	bmcBootDevice = map[inventory.BootDevice]bmc.BootDevice{
		inventory.BootPXE: bmc.BootPXE, inventory.BootDisk: bmc.BootDisk, inventory.BootBIOS: bmc.BootBIOS, inventory.BootCDROM: bmc.BootCDROM}
)

var _ BMC = (*Machines)(nil)
var _ bmc.StatusSink = (*Machines)(nil)
