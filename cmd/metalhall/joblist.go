package main

import (
	"fmt"
	"io"
	"net/url"

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
						rows = append(rows, []string{j.ID, j.Machine, orDash(j.Rack), string(j.Kind), string(j.State), orDash(step), when(j.UpdatedAt), orDash(clip(j.Error, 60))})
					}
					printTable(w, []string{"ID", "MACHINE", "RACK", "KIND", "STATE", "STEP", "UPDATED", "ERROR"}, rows)
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
