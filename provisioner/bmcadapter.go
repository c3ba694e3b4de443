package provisioner

import (
	"context"
	"fmt"
	"math"
	"reflect"
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

	consoles consoles // serial console sessions (console.go)
}

// Endpoint is a machine's BMC with its password unsealed. Every BMC call
// of the service starts here, so this is where the store's hold (a
// restored copy not yet resumed) refuses them all.
func (a *Machines) Endpoint(ctx context.Context, m *inventory.Machine) (bmc.Endpoint, error) {
	if err := a.Inv.CheckHold(); err != nil {
		return bmc.Endpoint{}, fmt.Errorf("machine %q: %w", m.Name, err)
	}
	ep := bmc.Endpoint{Address: m.BMC.Address, Protocol: bmc.Protocol(m.BMC.Protocol), Username: m.BMC.Username,
		Auth: bmc.AuthMode(m.BMC.Auth), System: m.BMC.System}
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

// SetBootDevice sets the boot device in the machine's boot mode: UEFI,
// the mode of every current GPU server platform, unless the machine is
// set to legacy (BIOS) boot.
func (a *Machines) SetBootDevice(ctx context.Context, m *inventory.Machine, device inventory.BootDevice, persistent bool) error {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return err
	}
	err = a.Ctl.SetBootDevice(ctx, ep, bmc.BootOptions{Device: bmcBootDevice[device], Persistent: persistent,
		UEFI: m.BMC.BootMode != "legacy"})
	a.record(ctx, m, "", err)
	return err
}

// SetPower runs a power action and waits until the BMC reports it.
func (a *Machines) SetPower(ctx context.Context, m *inventory.Machine, action inventory.PowerAction) error {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return err
	}
	err = a.Ctl.SetPower(ctx, ep, bmcPowerAction[action])
	var reached bmc.PowerState
	if err == nil {
		reached = bmc.PowerOn
		if action == inventory.PowerOff {
			reached = bmc.PowerOff
		}
	}
	a.record(ctx, m, reached, err)
	return err
}

// PowerState reads on, off or unknown.
func (a *Machines) PowerState(ctx context.Context, m *inventory.Machine) (string, error) {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return "unknown", err
	}
	st, err := a.Ctl.PowerState(ctx, ep)
	a.record(ctx, m, st, err)
	return string(st), err
}

// record notes every command's outcome on the machine, classified as the
// power sync classifies its reads, so `machine list` shows a failing BMC at
// once and a recovered one too. power is what the command read or reached;
// empty: it learned nothing of the power, and the last known state is kept.
func (a *Machines) record(ctx context.Context, m *inventory.Machine, power bmc.PowerState, err error) {
	st := bmc.StatusOf(power, err, time.Now())
	if power == "" && m.BMCStatus.Power != "" {
		st.Power = bmc.PowerState(m.BMCStatus.Power)
	}
	// Commands do not measure the draw nor read sensors: keep the sync's
	// last readings.
	if m.BMCStatus.ConsumedW > 0 {
		st.ConsumedWatts, st.WattsMeasured = float64(m.BMCStatus.ConsumedW), true
	}
	bs := inventory.BMCStatus{Power: string(st.Power), Reachable: st.Reachable, Outcome: st.Outcome,
		LastError: st.LastError, ReadAt: st.ReadAt.UTC(), ConsumedW: consumedW(st), Sensors: m.BMCStatus.Sensors}
	if sameContact(m.BMCStatus, bs) {
		// The command confirmed what the machine record says: rewriting
		// the record (with its inspection) to move the time of the last
		// contact would cost the single writer a commit per BMC step, and
		// the time is of a reading (power, draw), which most commands do
		// not make.
		return
	}
	if stepping(ctx) {
		// Written behind: the job's step that ran the command writes its
		// end next, and that commit carries this one.
		a.Inv.RecordBMCStatusBehind(m.Name, bs)
		return
	}
	// Asked for directly (the API's power read, boot device, event log):
	// on the machine before the answer.
	a.Inv.RecordBMCStatus(context.WithoutCancel(ctx), m.Name, bs)
}

// stepKey marks a context as a job step's (Engine.exec).
type stepKey struct{}

// inStep marks ctx as a job step's: what a BMC command says in it is
// written behind, for the step's end to carry.
func inStep(ctx context.Context) context.Context { return context.WithValue(ctx, stepKey{}, true) }

func stepping(ctx context.Context) bool { return ctx.Value(stepKey{}) != nil }

// sameContact reports whether a command's status says nothing the last
// recorded one did not: the same power, reachability, outcome, error and
// draw.
func sameContact(last, now inventory.BMCStatus) bool {
	return !last.ReadAt.IsZero() && last.Power == now.Power && last.Reachable == now.Reachable &&
		last.Outcome == now.Outcome && last.LastError == now.LastError && last.ConsumedW == now.ConsumedW
}

// EventLog reads the machine's system event log from its BMC.
func (a *Machines) EventLog(ctx context.Context, m *inventory.Machine) ([]bmc.Event, error) {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return nil, err
	}
	ev, err := a.Ctl.EventLog(ctx, ep)
	a.record(ctx, m, "", err)
	return ev, err
}

// SetPowerLimit caps the machine's draw through its BMC and reads the cap
// back.
func (a *Machines) SetPowerLimit(ctx context.Context, m *inventory.Machine, watts int) (bmc.PowerLimit, error) {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return bmc.PowerLimit{}, err
	}
	pl, err := a.Ctl.SetPowerLimit(ctx, ep, watts)
	a.record(ctx, m, "", err)
	return pl, err
}

// ClearEventLog empties the machine's system event log on its BMC.
func (a *Machines) ClearEventLog(ctx context.Context, m *inventory.Machine) error {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return err
	}
	err = a.Ctl.ClearEventLog(ctx, ep)
	a.record(ctx, m, "", err)
	return err
}

// BMCTargets lists every machine that is not retired, with its endpoint.
func (a *Machines) BMCTargets(ctx context.Context) ([]bmc.Target, error) {
	if a.Inv.Hold() != nil {
		return nil, nil // on hold: the sync reads no BMC
	}
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

// StatusRefresh is how old the recorded reading of a machine whose BMC
// says the same as last time may grow before the power sync writes it
// again only to move its time.
const StatusRefresh = 10 * time.Minute

// RecordBMCStatus stores one sync result. A result that says what the
// machine record already says (power, reachability, outcome, error, draw
// and sensors), read less than StatusRefresh ago, is not written: the
// sync reads every BMC every minute, and rewriting every machine record
// each round to move the time of its reading would cost the single writer
// a hall's worth of writes a minute, however quiet the hall.
func (a *Machines) RecordBMCStatus(ctx context.Context, machine string, st bmc.Status) error {
	bs := inventory.BMCStatus{Power: string(st.Power), Reachable: st.Reachable,
		Outcome: st.Outcome, LastError: st.LastError, ReadAt: st.ReadAt.UTC(), ConsumedW: consumedW(st),
		Sensors: sensorSummary(st.Sensors)}
	if m, err := a.Inv.Machine(ctx, machine); err == nil && sameContact(m.BMCStatus, bs) &&
		reflect.DeepEqual(m.BMCStatus.Sensors, bs.Sensors) && bs.ReadAt.Sub(m.BMCStatus.ReadAt) < StatusRefresh {
		return nil
	}
	return a.Inv.RecordBMCStatus(ctx, machine, bs)
}

// sensorSummary keeps what `machine show` and the metrics need of a
// sensor read; nil when the BMC reported none.
func sensorSummary(s bmc.Sensors) *inventory.SensorSummary {
	if len(s.Temperatures) == 0 && len(s.Fans) == 0 && len(s.PSUs) == 0 {
		return nil
	}
	out := &inventory.SensorSummary{Fans: len(s.Fans), PSUs: len(s.PSUs), WattsNotOffered: s.WattsUnsupported}
	out.InletC, out.HasInlet = s.Inlet()
	for _, f := range s.Fans {
		if f.Health == "" || f.Health == "OK" {
			out.FansOK++
		}
	}
	for _, p := range s.PSUs {
		if (p.Health == "" || p.Health == "OK") && (p.State == "" || p.State == "Enabled") {
			out.PSUsOK++
		}
	}
	return out
}

// consumedW is the measured draw in whole watts, 0 when not measured.
func consumedW(st bmc.Status) int64 {
	if !st.WattsMeasured || st.ConsumedWatts < 0 {
		return 0
	}
	return int64(math.Round(st.ConsumedWatts))
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

var (
	_ BMC            = (*Machines)(nil)
	_ EventLogReader = (*Machines)(nil)
	_ PowerLimiter   = (*Machines)(nil)
)
var _ bmc.StatusSink = (*Machines)(nil)
