package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

func selCommand() *cli.Command {
	return &cli.Command{Name: "sel", Usage: "read a machine's system event log from its BMC",
		UsageText: "metalhall machine sel [-o json] NAME",
		Flags:     []cli.Flag{outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
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
					rows = append(rows, []string{e.ID, orDash(e.Time), orDash(e.Message), e.Description})
				}
				printTable(w, []string{"ID", "TIME", "MESSAGE", "DESCRIPTION"}, rows)
			})
		}}
}
