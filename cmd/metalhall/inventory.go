package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

func siteCommand() *cli.Command {
	return &cli.Command{Name: "site", Usage: "data-centre sites", Subcommands: []*cli.Command{
		{Name: "create", Usage: "create a site", ArgsUsage: "NAME", UsageText: "metalhall site create [--description TEXT] NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "description", Usage: "free text: where the site is, who runs it"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "site")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.SiteCreate(), api.SiteCreate{Name: n, Description: c.String("description")})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "site %s created\n", out.Name) })
			}},
		{Name: "list", Usage: "list sites", Flags: []cli.Flag{outputFlag()}, Action: func(c *cli.Context) error {
			out, err := api.Call(c.Context, client(c), api.Ops.SiteList(), api.NoBody{})
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				rows := [][]string{}
				for _, s := range out {
					rows = append(rows, []string{s.Name, orDash(s.Description), when(s.CreatedAt)})
				}
				printTable(w, []string{"NAME", "DESCRIPTION", "CREATED"}, rows)
			})
		}},
	}}
}

func hallCommand() *cli.Command {
	return &cli.Command{Name: "hall", Usage: "data halls and their capacity", Subcommands: []*cli.Command{
		{Name: "create", Usage: "create a hall in a site", UsageText: "metalhall hall create --site SITE NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "site", Required: true, Usage: "the site the hall is in"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "hall")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.HallCreate(), api.HallCreate{Name: n, Site: c.String("site")})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "hall %s created in site %s\n", out.Name, out.Site) })
			}},
		{Name: "list", Usage: "list halls", Flags: []cli.Flag{&cli.StringFlag{Name: "site", Usage: "only the halls of this site"}, outputFlag()}, Action: func(c *cli.Context) error {
			q := url.Values{}
			setQ(q, "site", c.String("site"))
			out, err := api.Call(c.Context, client(c), api.Ops.HallList().Query(q), api.NoBody{})
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				rows := [][]string{}
				for _, h := range out {
					rows = append(rows, []string{h.Name, h.Site, when(h.CreatedAt)})
				}
				printTable(w, []string{"NAME", "SITE", "CREATED"}, rows)
			})
		}},
		{Name: "capacity", Usage: "per phase: power budget, allocated and installed kW; racks and machines by state",
			UsageText: "metalhall hall capacity HALL", Flags: []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "hall")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.HallCapacity(), api.NoBody{}, n)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { printCapacity(w, &out) })
			}},
	}}
}

func printCapacity(w io.Writer, c *inventory.HallCapacity) {
	fmt.Fprintf(w, "hall %s (site %s)\n\n", c.Hall, c.Site)
	rows := [][]string{}
	for _, p := range c.Phases {
		rows = append(rows, []string{strconv.Itoa(p.Phase), string(p.State), orDash(p.TargetDate),
			inventory.FormatKW(p.BudgetW), fmt.Sprintf("%s (%s)", inventory.FormatKW(p.AllocatedW), percent(p.AllocatedW, p.BudgetW)),
			fmt.Sprintf("%s (%s)", inventory.FormatKW(p.InstalledW), percent(p.InstalledW, p.BudgetW)),
			measuredCell(&p.Power, p.BudgetW), counts(p.Racks), counts(p.Machines)})
	}
	printTable(w, []string{"PHASE", "STATE", "TARGET", "BUDGET kW", "ALLOCATED kW", "RATED kW", "MEASURED kW", "RACKS", "MACHINES"}, rows)
}

// measuredLine says what the BMCs measured against a budget, how old the
// oldest reading is, and how many machines it leaves out:
// "31.2 kW (78%) of 4 machines, read 40s ago; 1 without a reading, 2 off".
func measuredLine(d *inventory.PowerDraw, budgetW int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s kW (%s) of %d machines", inventory.FormatKW(d.MeasuredW), percent(d.MeasuredW, budgetW), d.Measured)
	if d.Measured > 0 {
		fmt.Fprintf(&b, ", read %s ago", (time.Duration(d.ReadingAgeS) * time.Second).String())
	}
	if d.Unmeasured > 0 {
		fmt.Fprintf(&b, "; %d without a reading", d.Unmeasured)
	}
	if d.Off > 0 {
		fmt.Fprintf(&b, "; %d off", d.Off)
	}
	return b.String()
}

func percent(part, whole int64) string {
	if whole == 0 {
		return "-"
	}
	p := float64(part) * 100 / float64(whole)
	if p > 0 && p < 10 {
		return fmt.Sprintf("%.1f%%", p)
	}
	return fmt.Sprintf("%.0f%%", p)
}

// measuredCell is measuredLine for a table cell: "31.2 (3%) 4 read 40s ago, 1 unread".
func measuredCell(d *inventory.PowerDraw, budgetW int64) string {
	s := fmt.Sprintf("%s (%s) %d read", inventory.FormatKW(d.MeasuredW), percent(d.MeasuredW, budgetW), d.Measured)
	if d.Measured > 0 {
		s += " " + (time.Duration(d.ReadingAgeS) * time.Second).String() + " ago"
	}
	if d.Unmeasured > 0 {
		s += fmt.Sprintf(", %d unread", d.Unmeasured)
	}
	return s
}

// counts renders {"active": 3, "planned": 1} as "active 3, planned 1".
func counts[K ~string](m map[K]int) string {
	keys := make([]string, 0, len(m))
	for k, n := range m {
		if n > 0 {
			keys = append(keys, string(k))
		}
	}
	if len(keys) == 0 {
		return "-"
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[K(k)])
	}
	return strings.Join(parts, ", ")
}

func phaseCommand() *cli.Command {
	return &cli.Command{Name: "phase", Usage: "commissioning phases of a hall, with their power budgets", Subcommands: []*cli.Command{
		{Name: "create", Usage: "add a phase to a hall", UsageText: "metalhall phase create --hall HALL --number N --power-kw KW [--target-date YYYY-MM-DD]",
			Flags: []cli.Flag{&cli.StringFlag{Name: "hall", Required: true, Usage: "the hall the phase belongs to"}, &cli.IntFlag{Name: "number", Required: true, Usage: "the phase's number in its hall, 1 to 999"},
				&cli.Float64Flag{Name: "power-kw", Required: true, Usage: "the phase's power budget in kW"}, &cli.StringFlag{Name: "target-date", Usage: "when the phase should be live, YYYY-MM-DD"}, outputFlag()},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				in := api.PhaseCreate{Number: c.Int("number"), PowerKW: c.Float64("power-kw"), TargetDate: c.String("target-date")}
				out, err := api.Call(c.Context, client(c), api.Ops.PhaseCreate(), in, c.String("hall"))
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					fmt.Fprintf(w, "phase %d of hall %s created: %s kW, %s\n", out.Number, out.Hall, inventory.FormatKW(out.BudgetW), out.State)
				})
			}},
		{Name: "list", Usage: "list a hall's phases", UsageText: "metalhall phase list --hall HALL",
			Flags: []cli.Flag{&cli.StringFlag{Name: "hall", Required: true, Usage: "the hall whose phases to list"}, outputFlag()},
			Action: func(c *cli.Context) error {
				out, err := api.Call(c.Context, client(c), api.Ops.PhaseList(), api.NoBody{}, c.String("hall"))
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					rows := [][]string{}
					for _, p := range out {
						rows = append(rows, []string{strconv.Itoa(p.Number), string(p.State), inventory.FormatKW(p.BudgetW), orDash(p.TargetDate),
							inventory.FormatKW(p.AllocatedW), inventory.FormatKW(p.Power.RatedW), measuredCell(&p.Power, p.BudgetW)})
					}
					printTable(w, []string{"PHASE", "STATE", "BUDGET kW", "TARGET", "ALLOCATED kW", "RATED kW", "MEASURED kW"}, rows)
				})
			}},
		{Name: "set-state", Usage: "move a phase: planned → commissioning → live", UsageText: "metalhall phase set-state --hall HALL --number N --to STATE",
			Flags: []cli.Flag{&cli.StringFlag{Name: "hall", Required: true, Usage: "the phase's hall"}, &cli.IntFlag{Name: "number", Required: true, Usage: "the phase's number"}, &cli.StringFlag{Name: "to", Required: true, Usage: "planned, commissioning or live"}, outputFlag()},
			Action: func(c *cli.Context) error {
				out, err := api.Call(c.Context, client(c), api.Ops.PhaseSetState(), api.StateChange{To: c.String("to")},
					c.String("hall"), strconv.Itoa(c.Int("number")))
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					fmt.Fprintf(w, "phase %d of hall %s %s\n", out.Number, out.Hall, nowIn(string(out.State)))
				})
			}},
	}}
}

func rackCommand() *cli.Command {
	return &cli.Command{Name: "rack", Usage: "racks: create, import manifests, lifecycle, elevation", Subcommands: []*cli.Command{
		{Name: "create", Usage: "create a rack in a hall phase",
			UsageText: "metalhall rack create --hall HALL --phase N [--row ROW] [--units 48] [--power-kw KW] NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "hall", Required: true, Usage: "the hall the rack stands in"}, &cli.IntFlag{Name: "phase", Required: true, Usage: "the commissioning phase whose budget it draws on"},
				&cli.StringFlag{Name: "row", Usage: "the row the rack stands in"}, &cli.IntFlag{Name: "units", Value: 48, Usage: "the rack's height in units"}, &cli.Float64Flag{Name: "power-kw", Usage: "the rack's power budget"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "rack")
				if err != nil {
					return err
				}
				in := api.RackCreate{Name: n, Hall: c.String("hall"), Phase: c.Int("phase"), Row: c.String("row"), Units: c.Int("units"), PowerKW: c.Float64("power-kw")}
				out, err := api.Call(c.Context, client(c), api.Ops.RackCreate(), in)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					fmt.Fprintf(w, "rack %s created in hall %s phase %d: %dU, %s kW, %s\n", out.Name, out.Hall, out.Phase, out.Units, inventory.FormatKW(out.BudgetW), out.State)
				})
			}},
		{Name: "list", Usage: "list racks", UsageText: "metalhall rack list [--hall HALL] [--phase N] [--state STATE]",
			Flags: []cli.Flag{&cli.StringFlag{Name: "hall", Usage: "only racks in this hall"}, &cli.IntFlag{Name: "phase", Usage: "only racks in this phase"}, &cli.StringFlag{Name: "state", Usage: "only racks in this state (planned, installed, commissioning, active, maintenance, decommissioned)"}, outputFlag()},
			Action: func(c *cli.Context) error {
				q := url.Values{}
				setQ(q, "hall", c.String("hall"))
				setQ(q, "state", c.String("state"))
				if c.Int("phase") != 0 {
					q.Set("phase", strconv.Itoa(c.Int("phase")))
				}
				out, err := api.Call(c.Context, client(c), api.Ops.RackList().Query(q), api.NoBody{})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					rows := [][]string{}
					for _, r := range out {
						rows = append(rows, []string{r.Name, r.Hall, strconv.Itoa(r.Phase), orDash(r.Row), strconv.Itoa(r.Units), inventory.FormatKW(r.BudgetW), string(r.State), orDash(r.Tenant)})
					}
					printTable(w, []string{"NAME", "HALL", "PHASE", "ROW", "UNITS", "BUDGET kW", "STATE", "TENANT"}, rows)
				})
			}},
		{Name: "show", Usage: "a rack, its elevation and its power", UsageText: "metalhall rack show NAME", Flags: []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "rack")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.RackShow(), api.NoBody{}, n)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { printElevation(w, &out) })
			}},
		{Name: "set-state", Usage: "move a rack through its lifecycle", UsageText: "metalhall rack set-state --to STATE NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "to", Required: true, Usage: "planned, installed, commissioning, active, maintenance or decommissioned"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "rack")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.RackSetState(), api.StateChange{To: c.String("to")}, n)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "rack %s %s\n", out.Name, nowIn(string(out.State))) })
			}},
		{Name: "import", Usage: "import a rack manifest (YAML or CSV): all of it, or nothing",
			UsageText: "metalhall rack import --file MANIFEST\n\nSee docs/manifest-example.yaml for the format.",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "file", Required: true, Usage: "manifest path: .yaml, .yml or .csv"}, outputFlag()},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				path := c.String("file")
				ct := "application/yaml"
				switch strings.ToLower(filepath.Ext(path)) {
				case ".csv":
					ct = "text/csv"
				case ".yaml", ".yml":
				default:
					return usagef("--file %s: name a .yaml, .yml or .csv manifest", path)
				}
				f, err := os.Open(path)
				if err != nil {
					return usagef("--file: %v", err) // a file named on the command line
				}
				defer f.Close()
				out, err := api.Call(c.Context, client(c), api.Ops.RackImport(), api.Upload{ContentType: ct, Body: f})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					verb := "updated"
					if out.RackCreated {
						verb = "created"
					}
					fmt.Fprintf(w, "rack %s %s: %d machines enrolled, %d already there\n", out.Rack, verb, len(out.Created), len(out.Unchanged))
					if len(out.CablingUpdated) > 0 {
						fmt.Fprintf(w, "cabling plan replaced: %s\n", strings.Join(out.CablingUpdated, ", "))
					}
				})
			}},
		{Name: "commission", Usage: "commission every machine of a rack; the rack becomes active when all pass",
			UsageText: "metalhall rack commission [--force-power] [--wait] NAME", Flags: []cli.Flag{forcePowerFlag(), waitFlag(), outputFlag()}, Action: rackCommission},
		{Name: "delete", Usage: "remove an empty rack", UsageText: "metalhall rack delete NAME",
			Action: func(c *cli.Context) error {
				n, err := name(c, "rack")
				if err != nil {
					return err
				}
				if _, err := api.Call(c.Context, client(c), api.Ops.RackDelete(), api.NoBody{}, n); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "rack %s deleted\n", n)
				return nil
			}},
	}}
}

func setQ(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// printElevation draws a rack from its top unit down: which machine holds
// which units, the free runs between them, and the power drawn against the
// budget.
func printElevation(w io.Writer, r *api.RackDetail) {
	fmt.Fprintf(w, "rack %s  hall %s  phase %d  row %s  state %s  tenant %s\n", r.Name, r.Hall, r.Phase, orDash(r.Row), r.State, orDash(r.Tenant))
	fmt.Fprintf(w, "power %s / %s kW (%s)   units %d / %d used   machines %d\n\n",
		inventory.FormatKW(r.Usage.InstalledW), inventory.FormatKW(r.BudgetW), percent(r.Usage.InstalledW, r.BudgetW),
		r.Usage.UsedUnits, r.Units, r.Usage.Machines)
	if r.Power != nil {
		alert := ""
		if r.PowerAlert {
			alert = "   OVER THE ALERT SHARE"
		}
		fmt.Fprintf(w, "rated %s kW   measured %s   budget %s kW%s\n\n", inventory.FormatKW(r.Power.RatedW),
			measuredLine(r.Power, r.BudgetW), inventory.FormatKW(r.BudgetW), alert)
	}
	at := map[int]*api.Machine{}
	for i := range r.Machines {
		m := &r.Machines[i]
		for u := m.Unit; u < m.Unit+m.Height; u++ {
			at[u] = m
		}
	}
	width := 20
	for _, m := range r.Machines {
		width = max(width, len(m.Name))
	}
	rule := func(l, r string) { fmt.Fprintf(w, "          %s%s%s\n", l, strings.Repeat("─", width+2), r) }
	rule("┌", "┐")
	for u := r.Units; u >= 1; {
		m := at[u]
		if m == nil {
			top := u
			for u >= 1 && at[u] == nil {
				u--
			}
			fmt.Fprintf(w, " %-8s │ %-*s │\n", unitRange(u+1, top), width, fmt.Sprintf("free (%dU)", top-u))
		} else {
			fmt.Fprintf(w, " %-8s │ %-*s │ %s  %s kW\n", unitRange(m.Unit, m.Unit+m.Height-1), width, m.Name, m.State, inventory.FormatKW(m.PowerW))
			u = m.Unit - 1
		}
		if u >= 1 {
			rule("├", "┤")
		}
	}
	rule("└", "┘")
}

func unitRange(lo, hi int) string {
	if lo == hi {
		return fmt.Sprintf("U%02d", lo)
	}
	return fmt.Sprintf("U%02d-U%02d", hi, lo)
}
