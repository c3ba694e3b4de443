package main

import (
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

// jobGroupCommand is `job list`: the work in flight (or done) across the
// site, a hall, a rack or one machine.
func jobGroupCommand() *cli.Command {
	return &cli.Command{Name: "job", Usage: "jobs across the site: commissioning, provisioning, release, power", Subcommands: []*cli.Command{
		{Name: "list", Usage: "list jobs, by default those queued or running",
			UsageText: "metalhall job list [--hall HALL] [--rack RACK] [--machine MACHINE] [--kind commission|provision|release|power]\n                   [--state active|all|queued|running|succeeded|failed|cancelled]",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "hall", Usage: "only machines of this hall"},
				&cli.StringFlag{Name: "rack", Usage: "only machines of this rack"},
				&cli.StringFlag{Name: "machine", Usage: "only this machine's jobs"},
				&cli.StringFlag{Name: "kind", Usage: "commission, provision, release or power"},
				&cli.StringFlag{Name: "state", Value: "active", Usage: "active (queued or running), all, or one state"},
				outputFlag(),
			},
			Action: func(c *cli.Context) error {
				q := url.Values{}
				for _, f := range []string{"hall", "rack", "machine", "kind", "state"} {
					setQ(q, f, c.String(f))
				}
				out, err := api.Call(c.Context, client(c), api.Ops.JobList().Query(q), api.NoBody{})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					rows := [][]string{}
					for _, j := range out {
						step := j.StepName()
						if j.QueuePosition > 0 {
							step = fmt.Sprintf("queued (#%d)", j.QueuePosition)
						}
						state := string(j.State)
						if j.Paused {
							state = "paused"
						}
						rows = append(rows, []string{j.ID, j.Machine, orDash(j.Rack), string(j.Kind), state, orDash(step), when(j.UpdatedAt), orDash(clip(j.Error, 60))})
					}
					printTable(w, []string{"ID", "MACHINE", "RACK", "KIND", "STATE", "STEP", "UPDATED", "ERROR"}, rows)
					if len(out) > 0 && out[0].Paused {
						fmt.Fprintln(w, "paused: this service is on hold since its restore; 'metalhall job resume' (admin) lets the jobs run and the BMCs be contacted")
					}
				})
			}},
		{Name: "resume", Usage: "lift the hold of a restored copy: its paused jobs run again and its BMCs may be contacted (admin)",
			UsageText: `metalhall job resume

A data dir restored with 'metalhall restore' starts on hold: no job step
runs and no BMC is contacted. Resume only once the original service is
stopped for good, or the copy's machines are its own to drive.`,
			Flags: []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.JobResume(), api.NoBody{})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					fmt.Fprintf(w, "hold lifted (%s): %d job(s) run again", out.Hold.Reason, len(out.Jobs))
					if len(out.Jobs) > 0 {
						fmt.Fprintf(w, ": %s", strings.Join(out.Jobs, ", "))
					}
					fmt.Fprintln(w)
				})
			}},
	}}
}

// clip shortens s to at most n runes for a table column; the whole text
// is in -o json and in 'machine show'.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
