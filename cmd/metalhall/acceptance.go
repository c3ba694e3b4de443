package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

// rackWithAcceptance is the rack command with its acceptance listing.
func rackWithAcceptance() *cli.Command {
	cmd := rackCommand()
	cmd.Subcommands = append(cmd.Subcommands, rackAcceptanceCommand(), rackFirmwareCommand(), rackCablingCommand(), rackCablingPlanCommand())
	return cmd
}

func rackAcceptanceCommand() *cli.Command {
	return &cli.Command{Name: "acceptance", Usage: "every machine's latest acceptance result and the fix list, top of the rack first",
		UsageText: "metalhall rack acceptance [-o json] NAME\n\nRun the suite again with: metalhall rack commission NAME (or machine commission NAME for one machine)",
		Flags:     []cli.Flag{outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "rack")
			if err != nil {
				return err
			}
			ra, err := api.Call(c.Context, client(c), api.Ops.RackAcceptance(), api.NoBody{}, n)
			if err != nil {
				return err
			}
			return show(c, ra, func(w io.Writer) { printRackAcceptance(w, ra) })
		}}
}

func printRackAcceptance(w io.Writer, ra api.RackAcceptance) {
	var rows [][]string
	for _, m := range ra.Machines {
		rows = append(rows, []string{fmt.Sprintf("U%d", m.Unit), m.Machine, string(m.State), orDash(m.Profile), m.Result, orDash(m.Job), when(m.Reported)})
	}
	printTable(w, []string{"UNIT", "MACHINE", "STATE", "PROFILE", "ACCEPTANCE", "JOB", "REPORTED"}, rows)
	fmt.Fprintf(w, "\nrack %s: %d passed, %d failed, %d without a report\n", ra.Rack, ra.Passed, ra.Failed, ra.NotRun)
	if len(ra.FixList) > 0 {
		fmt.Fprintf(w, "to fix:\n  %s\n", strings.Join(ra.FixList, "\n  "))
	}
}

func machineAcceptanceCommand() *cli.Command {
	return &cli.Command{Name: "acceptance", Usage: "a machine's acceptance report: each check, its result and what to fix",
		UsageText: "metalhall machine acceptance [--all] [-o json] NAME\n\nRun the suite again with: metalhall machine commission NAME",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "all", Usage: "every commissioning's report, not only the newest"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			ma, err := api.Call(c.Context, client(c), api.Ops.MachineAcceptance(), api.NoBody{}, n)
			if err != nil {
				return err
			}
			return show(c, ma, func(w io.Writer) { printMachineAcceptance(w, ma, c.Bool("all")) })
		}}
}

func printMachineAcceptance(w io.Writer, ma api.MachineAcceptance, all bool) {
	if len(ma.Reports) == 0 {
		fmt.Fprintf(w, "machine %s has no acceptance report: one is made by each commissioning whose profile has an acceptance suite\n", ma.Machine)
		return
	}
	reps := ma.Reports
	if !all {
		reps = reps[len(reps)-1:]
	}
	for i, r := range reps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "machine %s, %s, profile %s, reported %s: %s\n", ma.Machine, r.Job, r.Profile, when(r.Reported), acceptanceVerdict(&r))
		var rows [][]string
		for _, ch := range r.Checks {
			req := "required"
			if !ch.Required {
				req = "optional"
			}
			rows = append(rows, []string{ch.Name, req, string(ch.Result), ch.Summary})
		}
		printTable(w, []string{"CHECK", "", "RESULT", "SUMMARY"}, rows)
		for _, ch := range r.Checks {
			for _, f := range ch.Findings {
				fmt.Fprintf(w, "  %s: %s\n", ch.Name, f.Line())
			}
		}
	}
}

func acceptanceVerdict(r *inventory.AcceptanceReport) string {
	if r.Passed {
		return "PASSED"
	}
	return fmt.Sprintf("FAILED, %d to fix", len(r.Failures()))
}

// acceptanceLine summarises a machine's latest acceptance for machine
// show: "FAILED, 1 to fix (job-000003): GPU 0000:9a:00.0 at ... — reseat".
func acceptanceLine(r *inventory.AcceptanceReport) string {
	if r == nil {
		return ""
	}
	s := fmt.Sprintf("%s (%s, %s)", acceptanceVerdict(r), r.Job, when(r.Reported))
	if f := r.Failures(); len(f) > 0 {
		s += ": " + strings.Join(f, "; ")
	}
	return s
}

func rackFirmwareCommand() *cli.Command {
	return &cli.Command{Name: "firmware", Usage: "firmware of every machine: in-band (BIOS, NVMe, InfiniBand) from its latest inspection, what its BMC reported at commissioning, and the drift",
		UsageText: "metalhall rack firmware [-o json] NAME",
		Flags:     []cli.Flag{outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "rack")
			if err != nil {
				return err
			}
			rf, err := api.Call(c.Context, client(c), api.Ops.RackFirmware(), api.NoBody{}, n)
			if err != nil {
				return err
			}
			return show(c, rf, func(w io.Writer) { printRackFirmware(w, rf) })
		}}
}

func printRackFirmware(w io.Writer, rf api.RackFirmware) {
	var rows [][]string
	var below []string
	for _, m := range rf.Machines {
		var bmcFW []string
		for _, v := range m.BMCReported {
			bmcFW = append(bmcFW, v.Component+" "+v.Version)
		}
		reported := orDash(strings.Join(bmcFW, ", "))
		if m.BMCError != "" {
			reported += " (last read failed: " + m.BMCError + ")"
		}
		if !m.Inspected {
			rows = append(rows, []string{fmt.Sprintf("U%d", m.Unit), m.Machine, "not inspected yet", "-", "-", reported})
			continue
		}
		rows = append(rows, []string{fmt.Sprintf("U%d", m.Unit), m.Machine, orDash(m.BIOS), orDash(strings.Join(m.NVMe, ",")), orDash(strings.Join(m.InfiniBand, ",")), reported})
		for _, b := range m.BelowBaseline {
			below = append(below, fmt.Sprintf("U%d %s: %s", m.Unit, m.Machine, b))
		}
	}
	printTable(w, []string{"UNIT", "MACHINE", "BIOS", "NVME", "INFINIBAND", "BMC-REPORTED"}, rows)
	if len(rf.Drift) == 0 {
		fmt.Fprintf(w, "\nrack %s: no drift between machines\n", rf.Rack)
	} else {
		fmt.Fprintf(w, "\ndrift:\n  %s\n", strings.Join(rf.Drift, "\n  "))
	}
	if len(below) > 0 {
		fmt.Fprintf(w, "below the profile's baseline:\n  %s\n", strings.Join(below, "\n  "))
	}
}

func rackCablingCommand() *cli.Command {
	return &cli.Command{Name: "cabling", Usage: "the cables each machine's Ethernet ports saw over LLDP at commissioning; --csv in NetBox's cable-import columns",
		UsageText: "metalhall rack cabling [--csv] [-o json] NAME",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "csv", Usage: "NetBox cable import CSV of the connected ports"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "rack")
			if err != nil {
				return err
			}
			rc, err := api.Call(c.Context, client(c), api.Ops.RackCabling(), api.NoBody{}, n)
			if err != nil {
				return err
			}
			if c.Bool("csv") {
				return writeNetBoxCables(c.App.Writer, rc)
			}
			return show(c, rc, func(w io.Writer) { printRackCabling(w, rc) })
		}}
}

func printRackCabling(w io.Writer, rc api.RackCabling) {
	if len(rc.Ports) == 0 {
		fmt.Fprintf(w, "rack %s: no LLDP observations yet (a profile with a cabling check records them at commissioning)\n", rc.Rack)
		return
	}
	var rows [][]string
	for _, p := range rc.Ports {
		rows = append(rows, []string{fmt.Sprintf("U%d", p.Unit), p.Machine, p.Interface, orDash(p.PCIAddress), p.Status, orDash(p.Switch), orDash(p.SwitchPort), orDash(p.PortDescription)})
	}
	printTable(w, []string{"UNIT", "MACHINE", "PORT", "PCI", "STATUS", "SWITCH", "SWITCH PORT", "PORT DESCRIPTION"}, rows)
}

// writeNetBoxCables writes the connected ports as NetBox's cable bulk
// import expects them: both ends as dcim.interface, by device and name.
func writeNetBoxCables(w io.Writer, rc api.RackCabling) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"side_a_device", "side_a_type", "side_a_name", "side_b_device", "side_b_type", "side_b_name", "status"})
	for _, p := range rc.Ports {
		if p.Status == "connected" {
			cw.Write([]string{p.Machine, "dcim.interface", p.Interface, p.Switch, "dcim.interface", p.SwitchPort, "connected"})
		}
	}
	cw.Flush()
	return cw.Error()
}
