package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

func waitFlag() cli.Flag {
	return &cli.BoolFlag{Name: "wait", Usage: "wait for the job to end, showing its steps; exit non-zero if it fails"}
}

// forcePowerFlag takes a job's power-ons past the energisation interlock.
func forcePowerFlag() cli.Flag {
	return &cli.BoolFlag{Name: "force-power", Usage: "staff: let the job power the machine on even past its rack's power budget by measured draw"}
}

// withForcePower asks op with force_power when --force-power is given.
func withForcePower[In, Out any](c *cli.Context, op api.Op[In, Out]) api.Op[In, Out] {
	if c.Bool("force-power") {
		return op.Query(url.Values{"force_power": {"true"}})
	}
	return op
}

// jobCommand builds `machine commission|provision|release|power|cancel`.
func jobCommand[In any](cmdName string, op api.Op[In, api.Job], usage, usageText string, flags []cli.Flag, body func(c *cli.Context) (In, error)) *cli.Command {
	return &cli.Command{Name: cmdName, Usage: usage, UsageText: usageText,
		Flags: append(flags, waitFlag(), outputFlag()),
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			in, err := body(c)
			if err != nil {
				return err
			}
			j, err := api.Call(c.Context, client(c), withForcePower(c, op), in, n)
			if err != nil {
				return err
			}
			if !c.Bool("wait") {
				return show(c, j, func(w io.Writer) {
					fmt.Fprintf(w, "%s job %s started for %s", j.Kind, j.ID, n)
					if j.QueuePosition > 0 {
						fmt.Fprintf(w, " (queued, position %d)", j.QueuePosition)
					}
					fmt.Fprintf(w, "; follow it with 'metalhall machine events --follow %s'\n", n)
				})
			}
			return waitForJob(c, n, j.ID)
		}}
}

func jobCommands() []*cli.Command {
	return []*cli.Command{
		jobCommand("commission", api.Ops.MachineCommission(), "commission a machine: BMC check, PXE boot, inspection, profile check", "metalhall machine commission [--force-power] [--wait] NAME",
			[]cli.Flag{forcePowerFlag()}, func(c *cli.Context) (api.NoBody, error) { return api.NoBody{}, nil }),
		jobCommand("provision", api.Ops.MachineProvision(), "image a machine with an OS image (also reimages a deployed machine)",
			"metalhall machine provision --image IMAGE [--ssh-key-file F] [--user-data-file F] [--force-power] [--wait] NAME",
			[]cli.Flag{&cli.StringFlag{Name: "image", Required: true, Usage: "the image to write: NAME, or TENANT/NAME for a tenant's private one"}, &cli.StringFlag{Name: "ssh-key-file", Usage: "public keys, one a line"},
				&cli.StringFlag{Name: "user-data-file", Usage: "cloud-init user data"}, forcePowerFlag()},
			func(c *cli.Context) (api.ProvisionRequest, error) {
				in := api.ProvisionRequest{Image: c.String("image")}
				if f := c.String("ssh-key-file"); f != "" {
					data, err := os.ReadFile(f)
					if err != nil {
						return in, fmt.Errorf("--ssh-key-file: %w", err)
					}
					for _, l := range strings.Split(string(data), "\n") {
						if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
							in.SSHKeys = append(in.SSHKeys, l)
						}
					}
				}
				if f := c.String("user-data-file"); f != "" {
					data, err := os.ReadFile(f)
					if err != nil {
						return in, fmt.Errorf("--user-data-file: %w", err)
					}
					in.UserData = string(data)
				}
				return in, nil
			}),
		jobCommand("release", api.Ops.MachineRelease(), "erase a machine's disks and make it available again", "metalhall machine release [--wipe certified|full|fast] [--force-power] [--wait] NAME",
			[]cli.Flag{forcePowerFlag(), &cli.StringFlag{Name: "wipe", Value: "certified", Usage: "certified: each disk's strongest erase (NVMe sanitize/format), verified, see machine erase-report; full: zero every byte; fast: partition tables, first and last MiB, discard (not a sanitization)"}},
			func(c *cli.Context) (api.ReleaseRequest, error) {
				return api.ReleaseRequest{WipeMode: c.String("wipe")}, nil
			}),
		jobCommand("cancel", api.Ops.MachineCancel(), "cancel a machine's running job (the machine ends failed, reason cancelled)", "metalhall machine cancel NAME",
			nil, func(c *cli.Context) (api.NoBody, error) { return api.NoBody{}, nil }),
		{Name: "power", Usage: "power a machine on, off or cycle it, or read its power state",
			UsageText: "metalhall machine power --action on|off|cycle|status [--force] NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "action", Required: true, Usage: "on, off, cycle or status"},
				&cli.BoolFlag{Name: "force", Usage: "staff: power on even past the rack's power budget by measured draw"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "machine")
				if err != nil {
					return err
				}
				action := c.String("action")
				if action == "status" {
					st, err := api.Call(c.Context, client(c), api.Ops.MachinePowerStatus(), api.PowerRequest{Action: action}, n)
					if err != nil {
						return err
					}
					return show(c, st, func(w io.Writer) { fmt.Fprintf(w, "%s is %s\n", st.Machine, st.Power) })
				}
				j, err := api.Call(c.Context, client(c), api.Ops.MachinePower(), api.PowerRequest{Action: action, Force: c.Bool("force")}, n)
				if err != nil {
					return err
				}
				// Power commands are short: always wait for them.
				return waitForJob(c, n, j.ID)
			}},
	}
}

// waitForJob follows a machine's job until it ends, printing each step as
// it starts and ends. A failed or cancelled job is an error.
func waitForJob(c *cli.Context, machine, id string) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	cl := client(c)
	w := c.App.Writer
	seen := map[string]inventory.StepState{}
	job := api.Ops.MachineJob()
	for {
		j, err := api.Call(c.Context, cl, job, api.NoBody{}, machine)
		if err != nil {
			if c.Context.Err() != nil {
				return errors.New("stopped waiting; the job goes on in the service")
			}
			return err
		}
		// The next read waits in the service until the job changes.
		job = api.Ops.MachineJob().Query(url.Values{"wait": {"30s"}, "since": {j.UpdatedAt.Format(time.RFC3339Nano)}})
		if j.ID != id {
			return fmt.Errorf("job %s of %s is no longer its job (now %s)", id, machine, j.ID)
		}
		if format == "table" {
			for _, s := range j.Steps {
				if seen[s.Name] != s.State && s.State != inventory.StepPending {
					seen[s.Name] = s.State
					line := fmt.Sprintf("%s  %-14s %s", time.Now().Format("15:04:05"), s.Name, s.State)
					if s.State == inventory.StepDone && !s.StartedAt.IsZero() {
						line += fmt.Sprintf(" (%s)", s.EndedAt.Sub(s.StartedAt).Round(100*time.Millisecond))
					}
					if s.Error != "" {
						line += ": " + clean(s.Error)
					}
					fmt.Fprintln(w, line)
				}
			}
		}
		if j.State.Finished() {
			if format == "json" {
				show(c, j, nil)
			} else {
				fmt.Fprintf(w, "%s job %s %s\n", j.Kind, j.ID, j.State)
			}
			if j.State != inventory.JobSucceeded {
				return fmt.Errorf("%s of %s %s: %s", j.Kind, machine, j.State, j.Error)
			}
			return nil
		}
		if c.Context.Err() != nil {
			return errors.New("stopped waiting; the job goes on in the service")
		}
	}
}

// rackCommission commissions every machine of a rack and, with --wait,
// shows a live per-machine progress table until all have ended.
func rackCommission(c *cli.Context) error {
	n, err := name(c, "rack")
	if err != nil {
		return err
	}
	cl := client(c)
	rc, err := api.Call(c.Context, cl, withForcePower(c, api.Ops.RackCommission()), api.NoBody{}, n)
	if err != nil {
		return err
	}
	if !c.Bool("wait") {
		return show(c, rc, func(w io.Writer) { printRackCommission(w, rc) })
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	w := c.App.Writer
	// On a terminal, a table redrawn in place; otherwise (a log, a pipe, a
	// script) one line per change, or one JSON object per change with -o
	// json, so the output reads top to bottom and can be parsed as it comes.
	tty := isTerminal(w) && format == "table"
	// The jobs are read again when the event feed says one of the rack's
	// machines changed (its cursor taken before the first read, so no
	// change falls between), or when a wait of the feed ends empty, which
	// refreshes queue positions and the elapsed time.
	page, err := api.Call(c.Context, cl, api.Ops.EventList().Query(url.Values{"wait": {"0s"}, "limit": {"1"}}), api.NoBody{})
	if err != nil {
		return err
	}
	cursor := page.Next
	ours := map[string]bool{}
	for _, j := range rc.Jobs {
		ours["machine/"+j.Machine] = true
	}
	start := time.Now()
	lines := 0
	last := map[string]rackProgress{}
	for {
		rows, failed, running := [][]string{}, 0, 0
		for _, j := range rc.Jobs {
			cur, err := api.Call(c.Context, cl, api.Ops.MachineJob(), api.NoBody{}, j.Machine)
			if err != nil {
				return err
			}
			step := cur.StepName()
			if cur.QueuePosition > 0 {
				step = fmt.Sprintf("queued (#%d)", cur.QueuePosition)
			}
			switch {
			case !cur.State.Finished():
				running++
			case cur.State != inventory.JobSucceeded:
				failed++
			}
			rows = append(rows, []string{cur.Machine, string(cur.State), orDash(step), orDash(clip(cur.Error, 80))})
			p := rackProgress{Machine: cur.Machine, Job: cur.ID, State: cur.State, Step: cur.StepName(), QueuePosition: cur.QueuePosition, Error: cur.Error}
			if tty || last[cur.Machine] == p {
				continue
			}
			last[cur.Machine] = p
			p.Time = time.Now().UTC()
			if format == "json" {
				if err := writeJSON(w, p, true); err != nil {
					return err
				}
				continue
			}
			line := fmt.Sprintf("%s  %s  %s  %s", p.Time.Local().Format("15:04:05"), p.Machine, p.State, orDash(step))
			if p.Error != "" {
				line += ": " + p.Error
			}
			fmt.Fprintln(w, line)
		}
		summary := fmt.Sprintf("rack %s commissioning: %d running, %d failed, %s elapsed\n", n, running, failed, time.Since(start).Round(time.Second))
		if tty {
			var b strings.Builder
			b.WriteString(summary)
			printTable(&b, []string{"MACHINE", "JOB", "STEP", "ERROR"}, rows)
			if lines > 0 {
				fmt.Fprintf(w, "\033[%dA\033[J", lines) // redraw in place
			}
			fmt.Fprint(w, b.String())
			lines = strings.Count(b.String(), "\n")
		}
		if running == 0 {
			if format == "table" && !tty {
				fmt.Fprint(w, summary)
			}
			if failed > 0 {
				return fmt.Errorf("rack %s: %d of %d machines failed commissioning (see 'metalhall machine show NAME' and 'metalhall machine events NAME')", n, failed, len(rc.Jobs))
			}
			return nil
		}
		for changed := false; !changed; {
			q := url.Values{"after": {strconv.FormatUint(cursor, 10)}, "wait": {rackWait.String()}}
			page, err := api.Call(c.Context, cl, api.Ops.EventList().Query(q), api.NoBody{})
			if c.Context.Err() != nil {
				return errors.New("stopped waiting; commissioning goes on in the service")
			}
			if err != nil {
				return err
			}
			cursor = page.Next
			changed = len(page.Events) == 0 // the wait ended: refresh anyway
			for _, e := range page.Events {
				changed = changed || ours[e.Subject]
			}
		}
	}
}

// rackWait is how long `rack commission --wait` waits on the event feed
// for a change of its machines before it reads their jobs anyway.
const rackWait = 10 * time.Second

// rackProgress is one change of one machine's commissioning, as printed by
// `rack commission --wait` when not on a terminal (a line, or an NDJSON
// object with -o json).
type rackProgress struct {
	Time          time.Time          `json:"time"`
	Machine       string             `json:"machine"`
	Job           string             `json:"job"`
	State         inventory.JobState `json:"state"`
	Step          string             `json:"step,omitempty"`
	QueuePosition int                `json:"queue_position,omitempty"`
	Error         string             `json:"error,omitempty"`
}

func printRackCommission(w io.Writer, rc api.RackCommission) {
	fmt.Fprintf(w, "rack %s: commissioning %d machines\n", rc.Rack, len(rc.Jobs))
	names := make([]string, 0, len(rc.Skipped))
	for m := range rc.Skipped {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		fmt.Fprintf(w, "  skipped %s: %s\n", m, clean(rc.Skipped[m]))
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func bootDeviceCommand() *cli.Command {
	return &cli.Command{Name: "boot-device", Usage: "set the device a machine boots from next (or always, with --persistent)",
		UsageText: "metalhall machine boot-device --device pxe|disk|bios|cdrom [--persistent] NAME",
		Flags:     []cli.Flag{&cli.StringFlag{Name: "device", Required: true, Usage: "pxe, disk, bios or cdrom"}, &cli.BoolFlag{Name: "persistent", Usage: "keep the device for every boot, not only the next"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			in := api.BootDeviceRequest{Device: c.String("device"), Persistent: c.Bool("persistent")}
			out, err := api.Call(c.Context, client(c), api.Ops.MachineBootDevice(), in, n)
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				how := "next boot"
				if out.Persistent {
					how = "every boot"
				}
				fmt.Fprintf(w, "%s boots from %s (%s)\n", n, out.Device, how)
			})
		}}
}
