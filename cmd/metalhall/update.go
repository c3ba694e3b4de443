package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
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
			var out api.Machine
			if err := client(c).Do(c.Context, "PATCH", "/api/v1/machines/"+api.PathEscape(n), in, &out); err != nil {
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
