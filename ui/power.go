package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

// measured is what the BMCs said a set of machines draws, at their last
// power sync: the sum of the readings, how many machines have one, and
// how old the oldest is. Budget and allocation are what was planned, and
// installed is the machines' rated power; this is what they draw.
type measured struct {
	W          int64
	Read, None int       // machines with a reading, and without one
	Oldest     time.Time // the oldest reading counted
	now        time.Time
}

// add counts one machine's reading, or its lack of one.
func (p *measured) add(m *api.Machine) {
	st := m.BMCStatus
	if st.ConsumedW <= 0 || st.ReadAt.IsZero() {
		p.None++
		return
	}
	p.W += st.ConsumedW
	p.Read++
	if p.Oldest.IsZero() || st.ReadAt.Before(p.Oldest) {
		p.Oldest = st.ReadAt
	}
}

// Summary says it in words: what is measured, on how many machines, how
// old the oldest reading is, and how many machines have none.
func (p measured) Summary() string {
	switch {
	case p.Read == 0 && p.None == 0:
		return "no machines"
	case p.Read == 0:
		return fmt.Sprintf("none yet: no BMC has reported a draw (%s)", machines(p.None))
	}
	s := fmt.Sprintf("%s on %s, oldest reading %s", kw(p.W), machines(p.Read), age(p.now, p.Oldest))
	if p.None > 0 {
		s += fmt.Sprintf("; %s without a reading", machines(p.None))
	}
	return s
}

// kw is watts as the console shows power.
func kw(w int64) string { return fmt.Sprintf("%.1f kW", float64(w)/1000) }

// age is how long ago t was, roughly, in words.
func age(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "under a minute old"
	case d < time.Hour:
		return fmt.Sprintf("%d min old", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h old", int(d/time.Hour))
	}
	return fmt.Sprintf("%d days old", int(d/(24*time.Hour)))
}

// machineReading is one machine's reading in words, for the rack page.
func machineReading(now time.Time, m *api.Machine) string {
	st := m.BMCStatus
	if st.ConsumedW <= 0 || st.ReadAt.IsZero() {
		return "no reading"
	}
	return fmt.Sprintf("%s (%s)", kw(st.ConsumedW), age(now, st.ReadAt))
}

// Short is the summary for a small tile: the draw and how many machines
// it counts.
func (p measured) Short() string {
	if p.Read == 0 {
		return "not measured"
	}
	return fmt.Sprintf("%s measured (%d of %s)", kw(p.W), p.Read, machines(p.Read+p.None))
}

// measuredByPhase sums a hall's readings phase by phase: two API reads,
// the hall's racks (for their phases) and its machines.
func (u *UI) measuredByPhase(r *http.Request, s *session, hall string) (map[int]measured, error) {
	var racks []inventory.Rack
	if err := u.get(r.Context(), s, "/api/v1/racks", url.Values{"hall": {hall}}, &racks); err != nil {
		return nil, err
	}
	var ms []api.Machine
	if err := u.get(r.Context(), s, "/api/v1/machines", url.Values{"hall": {hall}}, &ms); err != nil {
		return nil, err
	}
	phase := make(map[string]int, len(racks))
	out := map[int]measured{}
	for _, rk := range racks {
		phase[rk.Name] = rk.Phase
		out[rk.Phase] = measured{now: u.cfg.Now()}
	}
	for i := range ms {
		p, ok := phase[ms[i].Rack]
		if !ok {
			continue
		}
		m := out[p]
		m.add(&ms[i])
		out[p] = m
	}
	return out, nil
}

// machines is "1 machine", "2 machines".
func machines(n int) string {
	if n == 1 {
		return "1 machine"
	}
	return fmt.Sprintf("%d machines", n)
}
