package inventory

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// This file is the one home of how much a machine draws against its rack's
// budget: the energisation interlock (API power-ons and the engine's power
// steps alike), the rack, phase and hall power views and the rack power
// alert all count machines through drawOf.

// RackReader is what EnergisationCheck reads: a machine, its rack and the
// rack's machines.
type RackReader interface {
	Machine(ctx context.Context, name string) (*Machine, error)
	Rack(ctx context.Context, name string) (*Rack, error)
	Machines(ctx context.Context, f MachineFilter) ([]Machine, error)
}

// drawOf is what one machine counts for against its rack's budget now,
// and whether that is a reading of its BMC. A machine known to be off
// draws nothing: its last reading (commands keep it until the next sync)
// is of a machine that was on. A machine on with a reading counts it; one
// on without a reading counts its rating, as the worst case. A machine of
// unknown power without a reading counts nothing: nothing has told us it
// is on (with the power sync off, a machine no command has touched).
func drawOf(powerW int64, st *BMCStatus) (w int64, reading bool) {
	switch {
	case st.Power == "off":
		return 0, false
	case st.ConsumedW > 0:
		return st.ConsumedW, true
	case st.Power == "on":
		return powerW, false
	}
	return 0, false
}

// PowerDraw is a set of machines' power: their rating against what their
// BMCs measured. The budget it is held against is the rack's or phase's.
type PowerDraw struct {
	// RatedW is the sum of the machines' rated power (power_w).
	RatedW int64 `json:"rated_w"`
	// MeasuredW is the sum of the latest draws the BMCs reported, of the
	// machines not known to be off.
	MeasuredW int64 `json:"measured_w"`
	// DrawW is what the energisation interlock counts: MeasuredW plus the
	// rating of each machine that is on without a reading.
	DrawW int64 `json:"draw_w"`
	// Measured counts machines with a reading, Off those known to be off,
	// Unmeasured the rest: on, or of unknown power, without a reading.
	Measured   int `json:"measured"`
	Off        int `json:"off"`
	Unmeasured int `json:"unmeasured"`
	// OldestReadingAt is when the oldest reading in MeasuredW was taken,
	// ReadingAgeS its age in seconds when the view was made: how stale
	// the measured figure may be.
	OldestReadingAt time.Time `json:"oldest_reading_at,omitzero"`
	ReadingAgeS     int64     `json:"reading_age_s,omitempty"`
}

func (d *PowerDraw) add(powerW int64, st *BMCStatus) {
	d.RatedW += powerW
	w, reading := drawOf(powerW, st)
	d.DrawW += w
	switch {
	case reading:
		d.Measured++
		d.MeasuredW += w
		if at := st.ReadAt; !at.IsZero() && (d.OldestReadingAt.IsZero() || at.Before(d.OldestReadingAt)) {
			d.OldestReadingAt = at
		}
	case st.Power == "off":
		d.Off++
	default:
		d.Unmeasured++
	}
}

// merge adds another draw, e.g. a rack's to its phase's.
func (d *PowerDraw) merge(o PowerDraw) {
	d.RatedW += o.RatedW
	d.MeasuredW += o.MeasuredW
	d.DrawW += o.DrawW
	d.Measured += o.Measured
	d.Off += o.Off
	d.Unmeasured += o.Unmeasured
	if !o.OldestReadingAt.IsZero() && (d.OldestReadingAt.IsZero() || o.OldestReadingAt.Before(d.OldestReadingAt)) {
		d.OldestReadingAt = o.OldestReadingAt
	}
}

// aged stamps the reading's age as of now.
func (d *PowerDraw) aged(now time.Time) {
	if !d.OldestReadingAt.IsZero() {
		d.ReadingAgeS = max(0, int64(now.Sub(d.OldestReadingAt)/time.Second))
	}
}

// machinePower is what rackDraw decodes of a machine: a hall capacity
// report reads every machine of the hall, and decoding only these fields
// keeps that several times cheaper than decoding whole machines.
type machinePower struct {
	PowerW    int64     `json:"power_w"`
	BMCStatus BMCStatus `json:"bmc_status"`
}

// rackDraw sums the machines of one rack.
func rackDraw(tx kv.Tx, rack string) (PowerDraw, error) {
	var d PowerDraw
	prefix := append([]byte(rack), 0)
	machines := bkt(tx, bMachines)
	c := bkt(tx, bIdxRackM).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		var m machinePower
		if err := getJSON(machines, k[len(prefix):], &m); err != nil {
			return d, fmt.Errorf("rack index points at machine %q: %w", k[len(prefix):], err)
		}
		d.add(m.PowerW, &m.BMCStatus)
	}
	return d, nil
}

// RackPower is a rack's power: rated vs measured vs its budget.
func (s *Store) RackPower(ctx context.Context, rack string) (*PowerDraw, error) {
	var out PowerDraw
	err := s.view(func(tx kv.Tx) error {
		if !exists(tx, bRacks, rack) {
			return &NotFoundError{Kind: "rack", Name: rack}
		}
		var err error
		out, err = rackDraw(tx, rack)
		return err
	})
	if err != nil {
		return nil, err
	}
	out.aged(s.now())
	return &out, nil
}

// EnergisationCheck says whether powering machine name on would take its
// rack past its power budget, judged by what the rack draws now (drawOf
// each other machine) plus the rated power of the machine about to be
// powered on. Racks of 40-130 kW are commissioned phase by phase against
// budgets the hall's feeds can carry; nothing else stops a technician, or
// a rack commission, energising one machine too many. A machine already
// on adds nothing (a cycle of it neither), and a rack without a budget is
// never refused. It returns a *PlacementError (Limit
// "rack-power-measured") naming the figures and the excess, or nil. It
// reads through any backend.
func EnergisationCheck(ctx context.Context, s RackReader, name string) error {
	return EnergisationCheckPending(ctx, s, name, 0)
}

// EnergisationCheckPending is EnergisationCheck with pendingW more drawn
// by the rack: the ratings of its machines whose power-on was allowed and
// is under way, not yet recorded on them (the engine's, see provisioner).
func EnergisationCheckPending(ctx context.Context, s RackReader, name string, pendingW int64) error {
	m, err := s.Machine(ctx, name)
	if err != nil {
		return err
	}
	if m.BMCStatus.Power == "on" {
		return nil
	}
	r, err := s.Rack(ctx, m.Rack)
	if err != nil {
		return err
	}
	if r.BudgetW <= 0 {
		return nil
	}
	ms, err := s.Machines(ctx, MachineFilter{Rack: r.Name})
	if err != nil {
		return err
	}
	var drawW int64
	for i := range ms {
		if ms[i].Name == m.Name {
			continue // counted at its rating below
		}
		w, _ := drawOf(ms[i].PowerW, &ms[i].BMCStatus)
		drawW += w
	}
	if total := drawW + pendingW + m.PowerW; total > r.BudgetW {
		pending := ""
		if pendingW > 0 {
			pending = fmt.Sprintf(", power-ons under way add %s kW", FormatKW(pendingW))
		}
		return &PlacementError{Limit: "rack-power-measured", Msg: fmt.Sprintf(
			"machine %q: rack %s would draw %s kW of its %s kW budget (over by %s kW): it draws %s kW now%s, and powering the machine on adds its rated %s kW",
			m.Name, r.Name, FormatKW(total), FormatKW(r.BudgetW), FormatKW(total-r.BudgetW), FormatKW(drawW), pending, FormatKW(m.PowerW))}
	}
	return nil
}

// PowerAlertHysteresis is how far, as a share of its budget, a rack's
// measured draw must fall below the alert share before its alert clears:
// a rack hovering at the threshold raises one alert, not one per sync.
const PowerAlertHysteresis = 0.05

// PowerAlertChange is a rack whose measured draw crossed the alert share,
// upwards (Over) or back down past the hysteresis.
type PowerAlertChange struct {
	Rack      string
	Over      bool
	MeasuredW int64
	BudgetW   int64
}

// powerAlertFlip says whether a rack's alert changes with this draw.
func powerAlertFlip(r *Rack, d PowerDraw, share float64) bool {
	if r.BudgetW <= 0 {
		return r.PowerAlert // a rack whose budget went away has nothing to alert on
	}
	ratio := float64(d.MeasuredW) / float64(r.BudgetW)
	if r.PowerAlert {
		return ratio < share-PowerAlertHysteresis
	}
	return ratio >= share
}

// CheckRackPowerAlerts compares every rack's measured draw with share
// (0 < share <= 1, e.g. 0.9) of its budget. A rack that crosses it is
// marked (Rack.PowerAlert) and gets a "rack.power.over" event; a marked
// rack whose draw falls below share - PowerAlertHysteresis is cleared with
// a "rack.power.normal" event. The mark and its event commit together, so
// each crossing is told once, also across restarts. It reads every rack's
// machines, and writes only when a rack crosses; the power sync calls it
// after each round.
func (s *Store) CheckRackPowerAlerts(ctx context.Context, share float64) ([]PowerAlertChange, error) {
	if !(share > 0 && share <= 1) {
		return nil, invalid("power alert share", "%v is not a share of a budget: give one above 0 and at most 1 (e.g. 0.9)", share)
	}
	var flips []string
	err := s.view(func(tx kv.Tx) error {
		_, err := list(tx, bRacks, func(r *Rack) bool {
			if r.BudgetW <= 0 && !r.PowerAlert {
				return false
			}
			d, err := rackDraw(tx, r.Name)
			if err == nil && powerAlertFlip(r, d, share) {
				flips = append(flips, r.Name)
			}
			return false
		})
		return err
	})
	if err != nil || len(flips) == 0 {
		return nil, err
	}
	var out []PowerAlertChange
	now := s.now().UTC()
	err = s.write(func(tx kv.Tx, vc *viewChanges) error {
		out = out[:0]
		for _, name := range flips {
			r, err := get[Rack](tx, bRacks, "rack", name)
			if err != nil {
				continue // removed meanwhile
			}
			d, err := rackDraw(tx, name)
			if err != nil {
				return err
			}
			if !powerAlertFlip(r, d, share) {
				continue // changed meanwhile
			}
			r.PowerAlert = !r.PowerAlert
			if err := putJSON(bkt(tx, bRacks), []byte(name), r); err != nil {
				return err
			}
			ev := Event{Time: now, Actor: "power-sync", Subject: "rack/" + name, Outcome: "ok"}
			if r.PowerAlert {
				ev.Action = "rack.power.over"
				ev.Detail = fmt.Sprintf("rack %s draws %s kW measured, %.0f%% of its %s kW budget: at or over the alert share of %.0f%%",
					name, FormatKW(d.MeasuredW), pct(d.MeasuredW, r.BudgetW), FormatKW(r.BudgetW), share*100)
			} else {
				ev.Action = "rack.power.normal"
				ev.Detail = fmt.Sprintf("rack %s draws %s kW measured, %.0f%% of its %s kW budget: back under the alert share of %.0f%% less %.0f%%",
					name, FormatKW(d.MeasuredW), pct(d.MeasuredW, r.BudgetW), FormatKW(r.BudgetW), share*100, PowerAlertHysteresis*100)
			}
			// Through putEvents: the event feed (live pages) hears of it.
			if err := s.putEvents(tx, vc, []Event{ev}); err != nil {
				return err
			}
			out = append(out, PowerAlertChange{Rack: name, Over: r.PowerAlert, MeasuredW: d.MeasuredW, BudgetW: r.BudgetW})
		}
		return nil
	})
	return out, err
}

func pct(w, of int64) float64 {
	if of <= 0 {
		return 0
	}
	return float64(w) * 100 / float64(of)
}

// RackPowers is every rack's power, by rack name, read in one
// transaction (for the metrics scrape).
func (s *Store) RackPowers(ctx context.Context) (map[string]PowerDraw, error) {
	out := map[string]PowerDraw{}
	err := s.view(func(tx kv.Tx) error {
		_, err := list(tx, bRacks, func(r *Rack) bool {
			if d, err := rackDraw(tx, r.Name); err == nil {
				out[r.Name] = d
			}
			return false
		})
		return err
	})
	return out, err
}
