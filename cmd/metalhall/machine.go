package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

func machineCommand() *cli.Command {
	cmd := machineInventoryCommand()
	cmd.Subcommands = append(cmd.Subcommands, jobCommands()...)
	cmd.Subcommands = append(cmd.Subcommands, bootDeviceCommand())
	cmd.Subcommands = append(cmd.Subcommands, eraseReportCommand(), selCommand(), machineAcceptanceCommand(), machineUpdateCommand(),
		consoleCommand(), consoleLogCommand())
	return cmd
}

func machineInventoryCommand() *cli.Command {
	return &cli.Command{Name: "machine", Usage: "machines: enroll, list, show, commission, provision, release, power, events", Subcommands: []*cli.Command{
		{Name: "enroll", Usage: "enroll a machine in a rack",
			UsageText: `metalhall machine enroll --rack RACK --unit U [--height H] --mac MAC[,MAC...]
    --bmc-address ADDR[:PORT] --bmc-protocol ipmi|redfish --bmc-user USER
    --bmc-password-file FILE [--bmc-system SYSTEM] [--bmc-auth session|basic] [--bmc-boot-mode uefi|legacy]
    [--power-w W] [--profile PROFILE] [--ip IP] NAME

Example:
  metalhall machine enroll --rack a01 --unit 1 --height 8 --mac 52:54:00:12:34:56 \
    --bmc-address 10.1.7.7 --bmc-protocol redfish --bmc-user root \
    --bmc-password-file ./bmc.pw --power-w 10200 --profile hgx-h100 gpu-a01-01`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "rack", Required: true, Usage: "the rack the machine is in"}, &cli.IntFlag{Name: "unit", Required: true, Usage: "lowest U the machine occupies"},
				&cli.IntFlag{Name: "height", Value: 1, Usage: "height in U"}, &cli.StringFlag{Name: "mac", Required: true, Usage: "MAC address(es), comma-separated"},
				&cli.StringFlag{Name: "bmc-address", Required: true, Usage: "host[:port] or URL of the BMC"}, &cli.StringFlag{Name: "bmc-protocol", Required: true, Usage: "ipmi or redfish"},
				&cli.StringFlag{Name: "bmc-user", Required: true, Usage: "BMC user name"}, &cli.StringFlag{Name: "bmc-password-file", Required: true, Usage: "file holding the BMC password (never on the command line)"},
				&cli.StringFlag{Name: "bmc-system", Usage: "Redfish only: the ComputerSystem to drive, by Id or Name (default: the one that can be reset and boot-overridden)"},
				&cli.StringFlag{Name: "bmc-auth", Usage: "Redfish only: session or basic (default: a session when the BMC offers one)"},
				&cli.StringFlag{Name: "bmc-boot-mode", Usage: "uefi (default) or legacy: the firmware boot mode boot overrides ask for"},
				&cli.Int64Flag{Name: "power-w", Usage: "rated power in watts"}, &cli.StringFlag{Name: "profile", Usage: "hardware profile to commission against"},
				&cli.StringFlag{Name: "ip", Usage: "reserved address on a provisioning subnet"}, outputFlag(),
			},
			Action: func(c *cli.Context) error {
				n, err := name(c, "machine")
				if err != nil {
					return err
				}
				pw, err := os.ReadFile(c.String("bmc-password-file"))
				if err != nil {
					return fmt.Errorf("--bmc-password-file: %w", err)
				}
				in := api.MachineEnroll{Name: n, Rack: c.String("rack"), Unit: c.Int("unit"), Height: c.Int("height"),
					MACs: strings.Split(c.String("mac"), ","), BMCAddress: c.String("bmc-address"), BMCProtocol: c.String("bmc-protocol"),
					BMCUser: c.String("bmc-user"), BMCPassword: strings.TrimRight(string(pw), "\r\n"),
					BMCSystem: c.String("bmc-system"), BMCAuth: c.String("bmc-auth"), BMCBootMode: c.String("bmc-boot-mode"),
					PowerW: c.Int64("power-w"), Profile: c.String("profile"), IP: c.String("ip")}
				out, err := api.Call(c.Context, client(c), api.Ops.MachineEnroll(), in)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					fmt.Fprintf(w, "machine %s enrolled in rack %s at U%d-U%d\n", out.Name, out.Rack, out.Unit, out.Unit+out.Height-1)
				})
			}},
		{Name: "list", Usage: "list machines", UsageText: "metalhall machine list [--rack RACK] [--hall HALL] [--state STATE] [--tenant TENANT]",
			Flags: []cli.Flag{&cli.StringFlag{Name: "rack", Usage: "only machines in this rack"}, &cli.StringFlag{Name: "hall", Usage: "only machines in this hall"}, &cli.StringFlag{Name: "state", Usage: "only machines in this state (enrolled, available, deployed, failed, ...)"}, &cli.StringFlag{Name: "tenant", Usage: "only machines assigned to this tenant"}, outputFlag()},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				q := url.Values{}
				for _, k := range []string{"rack", "hall", "state", "tenant"} {
					setQ(q, k, c.String(k))
				}
				out, err := api.Call(c.Context, client(c), api.Ops.MachineList().Query(q), api.NoBody{})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					rows := [][]string{}
					for _, m := range out {
						rows = append(rows, []string{m.Name, m.Rack, fmt.Sprintf("U%d", m.Unit), string(m.State), orDash(m.Tenant),
							orDash(m.BMCStatus.Power), bmcHealth(m.BMCStatus), orDash(m.Reason)})
					}
					printTable(w, []string{"NAME", "RACK", "UNIT", "STATE", "TENANT", "POWER", "BMC", "REASON"}, rows)
				})
			}},
		{Name: "show", Usage: "one machine", UsageText: "metalhall machine show NAME", Flags: []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "machine")
				if err != nil {
					return err
				}
				m, err := api.Call(c.Context, client(c), api.Ops.MachineShow(), api.NoBody{}, n)
				if err != nil {
					return err
				}
				var job *api.Job
				if j, err := api.Call(c.Context, client(c), api.Ops.MachineJob(), api.NoBody{}, n); err == nil {
					job = &j
				}
				// Staff see the latest acceptance result; others get no report.
				var acc *inventory.AcceptanceReport
				if ma, err := api.Call(c.Context, client(c), api.Ops.MachineAcceptance(), api.NoBody{}, n); err == nil && len(ma.Reports) > 0 {
					acc = &ma.Reports[len(ma.Reports)-1]
				}
				view := struct {
					api.Machine
					Job        *api.Job                    `json:"job,omitempty"`
					Acceptance *inventory.AcceptanceReport `json:"acceptance,omitempty"`
				}{m, job, acc}
				return show(c, view, func(w io.Writer) {
					printFields(w, "name", m.Name, "state", string(m.State), "reason", m.Reason, "failed step", m.FailedStep,
						"rack", fmt.Sprintf("%s U%d-U%d (%dU)", m.Rack, m.Unit, m.Unit+m.Height-1, m.Height),
						"macs", strings.Join(m.MACs, ", "), "ip", orDash(m.IP), "power rating", inventory.FormatKW(m.PowerW)+" kW",
						"profile", orDash(m.Profile), "power limit", powerLimitLine(m.PowerLimit), "tenant", orDash(m.Tenant), "image", m.Image,
						"bmc", fmt.Sprintf("%s %s (user %s)", m.BMC.Protocol, m.BMC.Address, m.BMC.Username),
						"bmc reachable", bmcHealth(m.BMCStatus), "bmc last error", m.BMCStatus.LastError,
						"power state", fmt.Sprintf("%s (read %s)", orDash(m.BMCStatus.Power), when(m.BMCStatus.ReadAt)),
						"measured draw", measuredDraw(m.BMCStatus), "sensors", sensorLine(m.BMCStatus.Sensors),
						"inspected", when(m.InspectedAt), "acceptance", acceptanceLine(acc), "job", jobLine(job), "created", when(m.CreatedAt), "updated", when(m.UpdatedAt))
				})
			}},
		{Name: "maintenance", Usage: "put a machine in or out of maintenance", UsageText: "metalhall machine maintenance --on|--off [--reason TEXT] NAME",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "on", Usage: "put the machine in maintenance"}, &cli.BoolFlag{Name: "off", Usage: "take it out of maintenance, back to where it was"}, &cli.StringFlag{Name: "reason", Usage: "why, for the next person (shown in machine list)"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "machine")
				if err != nil {
					return err
				}
				if c.Bool("on") == c.Bool("off") {
					return usagef("machine maintenance: give exactly one of --on or --off")
				}
				out, err := api.Call(c.Context, client(c), api.Ops.MachineMaintenance(),
					api.MaintenanceRequest{On: c.Bool("on"), Reason: c.String("reason")}, n)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "machine %s %s\n", out.Name, nowIn(string(out.State))) })
			}},
		{Name: "events", Usage: "a machine's events: boot steps, state changes, actions", UsageText: "metalhall machine events [--follow] NAME",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new events until interrupted"},
				&cli.IntFlag{Name: "limit", Value: 100, Usage: "how many of the newest events to show first"}, outputFlag()},
			Action: machineEvents},
		{Name: "delete", Usage: "remove a machine that is not in use", UsageText: "metalhall machine delete NAME",
			Action: func(c *cli.Context) error {
				n, err := name(c, "machine")
				if err != nil {
					return err
				}
				if _, err := api.Call(c.Context, client(c), api.Ops.MachineDelete(), api.NoBody{}, n); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "machine %s deleted\n", n)
				return nil
			}},
	}}
}

// jobLine summarises a machine's current or last job.
func jobLine(j *api.Job) string {
	if j == nil {
		return ""
	}
	s := fmt.Sprintf("%s %s %s", j.Kind, j.ID, j.State)
	switch {
	case j.QueuePosition > 0:
		s += fmt.Sprintf(", queue position %d", j.QueuePosition)
	case !j.State.Finished():
		s += ", step " + j.StepName()
		if p := j.Progress; p.Total > 0 {
			s += fmt.Sprintf(" (%d of %d MiB, %d MB/s)", p.Bytes>>20, p.Total>>20, p.Rate/1_000_000)
		}
	case j.Error != "":
		s += ": " + j.Error
	}
	return s
}

func sensorLine(s *inventory.SensorSummary) string {
	if s == nil {
		return "-"
	}
	inlet := "inlet -"
	if s.HasInlet {
		inlet = fmt.Sprintf("inlet %.1f °C", s.InletC)
	}
	line := fmt.Sprintf("%s, fans %d/%d OK, PSUs %d/%d OK", inlet, s.FansOK, s.Fans, s.PSUsOK, s.PSUs)
	if s.WattsNotOffered {
		line += "; power reading not offered by this BMC"
	}
	return line
}

// powerLimitLine is the profile's power cap as the BMC took it; empty
// (not printed) when the profile asks for none.
func powerLimitLine(p *inventory.PowerLimitRecord) string {
	if p == nil {
		return ""
	}
	if p.State == "applied" {
		return fmt.Sprintf("%d W, applied via %s (%s)", p.LimitW, p.Via, when(p.At))
	}
	return fmt.Sprintf("%d W, not applied: the BMC offers no power cap (%s)", p.LimitW, when(p.At))
}

func measuredDraw(s inventory.BMCStatus) string {
	if s.ConsumedW <= 0 {
		return "-"
	}
	return inventory.FormatKW(s.ConsumedW) + " kW"
}

func bmcHealth(s inventory.BMCStatus) string {
	switch {
	case s.ReadAt.IsZero():
		return "unknown"
	case s.Outcome != "":
		return s.Outcome
	case s.Reachable:
		return "ok"
	}
	return "unreachable"
}

func machineEvents(c *cli.Context) error {
	n, err := name(c, "machine")
	if err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	cl := client(c)
	follow := c.Bool("follow")
	// Following, the feed's cursor is taken before the history is read:
	// an event committed in between is in one or both, never in neither.
	var cursor uint64
	if follow {
		page, err := api.Call(c.Context, cl, api.Ops.EventList().Query(url.Values{"wait": {"0s"}, "limit": {"1"}}), api.NoBody{})
		if err != nil {
			return err
		}
		cursor = page.Next
	}
	q := url.Values{"limit": {strconv.Itoa(c.Int("limit"))}}
	evs, err := api.Call(c.Context, cl, api.Ops.MachineEvents().Query(q), api.NoBody{}, n)
	if err != nil {
		return err
	}
	if !follow {
		return show(c, evs, func(w io.Writer) { printEvents(w, evs, true) })
	}
	var shown uint64 // the newest event printed
	for first := true; ; first = false {
		if err := printFollowed(c.App.Writer, format, evs, first, &shown); err != nil {
			return err
		}
		// The next events: a long poll on the service's event feed,
		// answered as soon as one about this machine is committed.
		q := url.Values{"after": {strconv.FormatUint(cursor, 10)}, "wait": {followWait.String()},
			"subject": {"machine/" + n}}
		page, err := api.Call(c.Context, cl, api.Ops.EventList().Query(q), api.NoBody{})
		if err != nil {
			if c.Context.Err() != nil {
				return nil
			}
			return err
		}
		cursor, evs = page.Next, page.Events
	}
}

// followWait is how long one read of the event feed waits for an event;
// the service answers at once when one comes.
const followWait = 30 * time.Second

// printFollowed prints followed events not printed yet: NDJSON with -o
// json (one object a line, so a script can read the stream as it comes),
// table lines otherwise, the header only with the first batch.
func printFollowed(w io.Writer, format string, evs []inventory.Event, first bool, shown *uint64) error {
	fresh := evs[:0:0]
	for _, e := range evs {
		if e.Seq > *shown {
			fresh = append(fresh, e)
			*shown = e.Seq
		}
	}
	if format == "json" {
		for _, e := range fresh {
			if err := writeJSON(w, e, true); err != nil {
				return err
			}
		}
		return nil
	}
	if len(fresh) > 0 || first {
		printEvents(w, fresh, first)
	}
	return nil
}

func printEvents(w io.Writer, evs []inventory.Event, header bool) {
	rows := [][]string{}
	for _, e := range evs {
		rows = append(rows, []string{when(e.Time), e.Action, orDash(e.Outcome), e.Actor, orDash(e.Detail)})
	}
	if header {
		printTable(w, []string{"TIME", "ACTION", "OUTCOME", "ACTOR", "DETAIL"}, rows)
		return
	}
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(cleanAll(r), "  "))
	}
}
