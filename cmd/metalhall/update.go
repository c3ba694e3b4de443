package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

// machineUpdateCommand corrects what was entered for a machine without
// deleting and re-enrolling it, and rotates its BMC password.
func machineUpdateCommand() *cli.Command {
	return &cli.Command{Name: "update", Usage: "change a machine's power, MACs, profile or BMC (address, protocol, user, password)",
		UsageText: `metalhall machine update [--power-w W] [--mac MAC[,MAC...]] [--profile PROFILE]
        [--bmc-address ADDR] [--bmc-protocol ipmi|redfish] [--bmc-user USER] [--bmc-password-file FILE] NAME

Only the flags given change. --mac replaces the whole list. The change is
checked as an enrollment is (unique MACs and BMC addresses, the rack's power
budget) and refused while the machine has a job in flight.`,
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "power-w", Usage: "rated power in watts"},
			&cli.StringFlag{Name: "mac", Usage: "the machine's provisioning MACs, comma-separated (replaces the list)"},
			&cli.StringFlag{Name: "profile", Usage: "hardware profile to commission against"},
			&cli.StringFlag{Name: "bmc-address", Usage: "host[:port] or URL of the BMC"},
			&cli.StringFlag{Name: "bmc-protocol", Usage: "ipmi or redfish"},
			&cli.StringFlag{Name: "bmc-user", Usage: "BMC user name"},
			&cli.StringFlag{Name: "bmc-password-file", Usage: "file holding the new BMC password (sealed by the service; never on the command line)"},
			outputFlag(),
		},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			var in api.MachineUpdate
			if c.IsSet("power-w") {
				w := c.Int64("power-w")
				in.PowerW = &w
			}
			if c.IsSet("mac") {
				in.MACs = strings.Split(c.String("mac"), ",")
			}
			for flag, dst := range map[string]**string{"profile": &in.Profile, "bmc-address": &in.BMCAddress, "bmc-protocol": &in.BMCProtocol, "bmc-user": &in.BMCUser} {
				if c.IsSet(flag) {
					v := c.String(flag)
					*dst = &v
				}
			}
			if f := c.String("bmc-password-file"); f != "" {
				pw, err := os.ReadFile(f)
				if err != nil {
					return usagef("--bmc-password-file: %v", err)
				}
				p := strings.TrimRight(string(pw), "\r\n")
				in.BMCPassword = &p
			}
			if in.PowerW == nil && in.MACs == nil && in.Profile == nil && in.BMCAddress == nil && in.BMCProtocol == nil && in.BMCUser == nil && in.BMCPassword == nil {
				return usagef("machine update: nothing to change: give at least one of --power-w, --mac, --profile, --bmc-address, --bmc-protocol, --bmc-user, --bmc-password-file")
			}
			out, err := api.Call(c.Context, client(c), api.Ops.MachineUpdate(), in, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				fmt.Fprintf(w, "machine %s updated: %s W, MACs %s, BMC %s %s (user %s), profile %s\n", out.Name, fmt.Sprint(out.PowerW),
					strings.Join(out.MACs, ","), out.BMC.Protocol, out.BMC.Address, out.BMC.Username, orDash(out.Profile))
				if in.BMCPassword != nil {
					fmt.Fprintln(w, "its BMC password was replaced (sealed; the next BMC operation uses it)")
				}
			})
		}}
}

// addUpdateCommands puts the update and delete commands beside the
// commands that create what they correct.
func addUpdateCommands(cmds []*cli.Command) {
	more := objectEditCommands()
	for _, c := range cmds {
		switch c.Name {
		case "rack":
			c.Subcommands = append(c.Subcommands, rackUpdateCommand())
		case "phase":
			c.Subcommands = append(c.Subcommands, phaseUpdateCommand())
		}
		c.Subcommands = append(c.Subcommands, more[c.Name]...)
	}
}

func rackUpdateCommand() *cli.Command {
	return &cli.Command{Name: "update", Usage: "change a rack's units, power budget or row",
		UsageText: `metalhall rack update [--units N] [--power-kw KW] [--row ROW] NAME

Only the flags given change. Fewer units must still hold every machine; a
budget must cover what the rack's machines draw and fit its phase's budget.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "units", Usage: "the rack's height in units"},
			&cli.Float64Flag{Name: "power-kw", Usage: "the rack's power budget in kW"},
			&cli.StringFlag{Name: "row", Usage: "the row the rack stands in"},
			outputFlag(),
		},
		Action: func(c *cli.Context) error {
			n, err := name(c, "rack")
			if err != nil {
				return err
			}
			var in api.RackUpdate
			if c.IsSet("units") {
				u := c.Int("units")
				in.Units = &u
			}
			if c.IsSet("power-kw") {
				kw := c.Float64("power-kw")
				in.PowerKW = &kw
			}
			if c.IsSet("row") {
				row := c.String("row")
				in.Row = &row
			}
			if in.Units == nil && in.PowerKW == nil && in.Row == nil {
				return usagef("rack update: nothing to change: give at least one of --units, --power-kw, --row")
			}
			out, err := api.Call(c.Context, client(c), api.Ops.RackUpdate(), in, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				fmt.Fprintf(w, "rack %s updated: %d units, budget %s kW, row %s\n", out.Name, out.Units, inventory.FormatKW(out.BudgetW), orDash(out.Row))
			})
		}}
}

func phaseUpdateCommand() *cli.Command {
	return &cli.Command{Name: "update", Usage: "change a phase's power budget or target date",
		UsageText: `metalhall phase update --hall HALL --number N [--power-kw KW] [--target-date YYYY-MM-DD|""]

Only the flags given change; --target-date "" removes the date. A budget
must cover what is already allocated to the phase's racks.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "hall", Required: true, Usage: "the phase's hall"},
			&cli.IntFlag{Name: "number", Required: true, Usage: "the phase's number"},
			&cli.Float64Flag{Name: "power-kw", Usage: "the phase's power budget in kW"},
			&cli.StringFlag{Name: "target-date", Usage: "when the phase should be live, YYYY-MM-DD"},
			outputFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			var in api.PhaseUpdate
			if c.IsSet("power-kw") {
				kw := c.Float64("power-kw")
				in.PowerKW = &kw
			}
			if c.IsSet("target-date") {
				d := c.String("target-date")
				in.TargetDate = &d
			}
			if in.PowerKW == nil && in.TargetDate == nil {
				return usagef("phase update: nothing to change: give --power-kw or --target-date")
			}
			out, err := api.Call(c.Context, client(c), api.Ops.PhaseUpdate(), in, c.String("hall"), strconv.Itoa(c.Int("number")))
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				fmt.Fprintf(w, "phase %d of hall %s updated: budget %s kW, target date %s\n", out.Number, out.Hall, inventory.FormatKW(out.BudgetW), orDash(out.TargetDate))
			})
		}}
}
