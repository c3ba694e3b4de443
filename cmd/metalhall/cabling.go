package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

// rackCablingPlanCommand imports a rack's cable schedule on its own, in
// the CSV columns `rack cabling --csv` exports.
func rackCablingPlanCommand() *cli.Command {
	return &cli.Command{Name: "cabling-plan", Usage: "set the cabling plan of a rack's machines from a cable schedule in NetBox's cable CSV: all of it, or nothing",
		UsageText: "metalhall rack cabling-plan --file CABLES.csv NAME\n\n" +
			"Columns side_a_device,side_a_name,side_b_device,side_b_name (NetBox's others are ignored); on each line one end is\n" +
			"a machine of the rack and its interface (name, PCI address or MAC), the other a switch and its port. Machines the\n" +
			"file does not name keep their plans. See docs/acceptance.md.",
		Flags: []cli.Flag{&cli.StringFlag{Name: "file", Required: true, Usage: "cable schedule: a .csv file"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "rack")
			if err != nil {
				return err
			}
			path := c.String("file")
			if !strings.EqualFold(filepath.Ext(path), ".csv") {
				return usagef("--file %s: name a .csv cable schedule", path)
			}
			f, err := os.Open(path)
			if err != nil {
				return usagef("--file: %v", err) // a file named on the command line
			}
			defer f.Close()
			out, err := api.Call(c.Context, client(c), api.Ops.RackCablingPlan(), api.Upload{ContentType: "text/csv", Body: f}, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				fmt.Fprintf(w, "rack %s: %d planned cables, %d machines' plans changed", out.Rack, out.Cables, len(out.Updated))
				if len(out.Updated) > 0 {
					fmt.Fprintf(w, " (%s)", strings.Join(out.Updated, ", "))
				}
				fmt.Fprintln(w)
			})
		}}
}
