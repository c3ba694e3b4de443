package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

func selCommand() *cli.Command {
	return &cli.Command{Name: "sel", Usage: "read (or, with --clear, empty) a machine's system event log on its BMC",
		UsageText: "metalhall machine sel [--clear] [-o json] NAME",
		Description: "Critical entries (Redfish Severity Critical; IPMI records of failed hardware) fail commissioning.\n" +
			"Once the cause is fixed, --clear empties the log (audited, with the entries it removed) so that\n" +
			"the machine can be commissioned again.",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "clear", Usage: "empty the log on the BMC (staff; the audit trail keeps what was cleared)"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			if c.Bool("clear") {
				out, err := api.Call(c.Context, client(c), api.Ops.MachineSELClear(), api.NoBody{}, n)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					crit := 0
					for _, e := range out.Cleared {
						if e.Severity == "Critical" {
							crit++
						}
					}
					fmt.Fprintf(w, "cleared the event log of machine %s: %d entries, %d critical\n", out.Machine, len(out.Cleared), crit)
				})
			}
			sel, err := api.Call(c.Context, client(c), api.Ops.MachineSEL(), api.NoBody{}, n)
			if err != nil {
				return err
			}
			return show(c, sel, func(w io.Writer) {
				if len(sel.Entries) == 0 {
					fmt.Fprintf(w, "the BMC of machine %s reports an empty event log\n", sel.Machine)
					return
				}
				rows := make([][]string, 0, len(sel.Entries))
				for _, e := range sel.Entries {
					rows = append(rows, []string{e.ID, orDash(e.Time), orDash(e.Severity), orDash(e.Message), e.Description})
				}
				printTable(w, []string{"ID", "TIME", "SEVERITY", "MESSAGE", "DESCRIPTION"}, rows)
			})
		}}
}
