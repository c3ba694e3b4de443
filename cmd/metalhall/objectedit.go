package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

// objectEditCommands are the update and delete commands of sites, halls,
// phases, subnets and tenants, by the command they belong under.
func objectEditCommands() map[string][]*cli.Command {
	return map[string][]*cli.Command{
		"site":   {siteUpdateCommand(), deleteCommand("site", "remove a site that has no halls", api.Ops.SiteDelete())},
		"hall":   {hallUpdateCommand(), deleteCommand("hall", "remove a hall that has no phases or racks", api.Ops.HallDelete())},
		"phase":  {phaseDeleteCommand()},
		"subnet": {subnetUpdateCommand(), deleteCommand("subnet", "remove a subnet with no reserved addresses and no unexpired leases", api.Ops.SubnetDelete())},
		"tenant": {tenantUpdateCommand(), deleteCommand("tenant", "remove a tenant that holds no rack, machine, live token or private image", api.Ops.TenantDelete())},
	}
}

// deleteCommand is `KIND delete NAME`: the service refuses while anything
// depends on the object and names what does.
func deleteCommand(kind, usage string, op api.Op[api.NoBody, api.NoReply]) *cli.Command {
	return &cli.Command{Name: "delete", Usage: usage, UsageText: "metalhall " + kind + " delete NAME",
		Action: func(c *cli.Context) error {
			n, err := name(c, kind)
			if err != nil {
				return err
			}
			if _, err := api.Call(c.Context, client(c), op, api.NoBody{}, n); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "%s %s deleted\n", kind, n)
			return nil
		}}
}

func siteUpdateCommand() *cli.Command {
	return &cli.Command{Name: "update", Usage: "change a site's description",
		UsageText: `metalhall site update --description TEXT NAME

--description "" removes it.`,
		Flags: []cli.Flag{&cli.StringFlag{Name: "description", Usage: "free text: where the site is, who runs it"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "site")
			if err != nil {
				return err
			}
			if !c.IsSet("description") {
				return usagef("site update: nothing to change: give --description")
			}
			d := c.String("description")
			out, err := api.Call(c.Context, client(c), api.Ops.SiteUpdate(), api.SiteUpdate{Description: &d}, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "site %s updated: %s\n", out.Name, orDash(out.Description)) })
		}}
}

func hallUpdateCommand() *cli.Command {
	return &cli.Command{Name: "update", Usage: "move a hall to another site",
		UsageText: "metalhall hall update --site SITE NAME",
		Flags:     []cli.Flag{&cli.StringFlag{Name: "site", Usage: "the site the hall belongs to"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "hall")
			if err != nil {
				return err
			}
			if !c.IsSet("site") {
				return usagef("hall update: nothing to change: give --site")
			}
			site := c.String("site")
			out, err := api.Call(c.Context, client(c), api.Ops.HallUpdate(), api.HallUpdate{Site: &site}, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "hall %s is in site %s\n", out.Name, out.Site) })
		}}
}

func phaseDeleteCommand() *cli.Command {
	return &cli.Command{Name: "delete", Usage: "remove a phase that has no racks",
		UsageText: "metalhall phase delete --hall HALL --number N",
		Flags: []cli.Flag{&cli.StringFlag{Name: "hall", Required: true, Usage: "the phase's hall"},
			&cli.IntFlag{Name: "number", Required: true, Usage: "the phase's number"}},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			hall, n := c.String("hall"), c.Int("number")
			if _, err := api.Call(c.Context, client(c), api.Ops.PhaseDelete(), api.NoBody{}, hall, strconv.Itoa(n)); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "phase %d of hall %s deleted\n", n, hall)
			return nil
		}}
}

func subnetUpdateCommand() *cli.Command {
	return &cli.Command{Name: "update", Usage: "change a subnet's gateway, dynamic range or DNS servers",
		UsageText: `metalhall subnet update [--gateway IP] [--range FIRST-LAST|""] [--dns IP,...|""] NAME

Only the flags given change; --range "" removes the dynamic range, --dns ""
the DNS servers. The DHCP server answers with the change from the next
packet. A change that would strand what the subnet holds is refused and
names it: a range over a machine's reserved address, a gateway on one, or
a range that leaves an unexpired lease outside it.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "gateway", Usage: "the router machines are given"},
			&cli.StringFlag{Name: "range", Usage: "dynamic range FIRST-LAST for machines not yet enrolled (\"\" removes it)"},
			&cli.StringFlag{Name: "dns", Usage: "DNS servers machines are given, comma-separated (\"\" removes them)"},
			outputFlag(),
		},
		Action: func(c *cli.Context) error {
			n, err := name(c, "subnet")
			if err != nil {
				return err
			}
			var in api.SubnetUpdate
			if c.IsSet("gateway") {
				gw := c.String("gateway")
				in.Gateway = &gw
			}
			if c.IsSet("range") {
				r := c.String("range")
				in.Range = &r
			}
			if c.IsSet("dns") {
				dns := []string{}
				if d := c.String("dns"); d != "" {
					dns = strings.Split(d, ",")
				}
				in.DNS = &dns
			}
			if in.Gateway == nil && in.Range == nil && in.DNS == nil {
				return usagef("subnet update: nothing to change: give at least one of --gateway, --range, --dns")
			}
			out, err := api.Call(c.Context, client(c), api.Ops.SubnetUpdate(), in, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				rng := "-"
				if out.RangeFirst != "" {
					rng = out.RangeFirst + "-" + out.RangeLast
				}
				fmt.Fprintf(w, "subnet %s updated: %s via %s, range %s, DNS %s\n", out.Name, out.CIDR, out.Gateway, rng, orDash(strings.Join(out.DNS, ",")))
			})
		}}
}

func tenantUpdateCommand() *cli.Command {
	return &cli.Command{Name: "update", Usage: "change a tenant's description",
		UsageText: `metalhall tenant update --description TEXT NAME

--description "" removes it.`,
		Flags: []cli.Flag{&cli.StringFlag{Name: "description", Usage: "free text: the customer's name, a contact, a contract"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "tenant")
			if err != nil {
				return err
			}
			if !c.IsSet("description") {
				return usagef("tenant update: nothing to change: give --description")
			}
			d := c.String("description")
			out, err := api.Call(c.Context, client(c), api.Ops.TenantUpdate(), api.TenantUpdate{Description: &d}, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "tenant %s updated: %s\n", out.Name, orDash(out.Description)) })
		}}
}
