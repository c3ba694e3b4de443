package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
)

func eraseReportCommand() *cli.Command {
	return &cli.Command{Name: "erase-report", Usage: "a machine's erase certificates: each disk's method, NIST 800-88 level, result and verification",
		UsageText: "metalhall machine erase-report [--all] [-o json] NAME",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "all", Usage: "every release's report, not only the newest"}, outputFlag()},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			rep, err := api.Call(c.Context, client(c), api.Ops.MachineEraseReport(), api.NoBody{}, n)
			if err != nil {
				return err
			}
			return show(c, rep, func(w io.Writer) { printEraseReport(w, rep, c.Bool("all")) })
		}}
}

// printEraseReport prints the newest report (or all), a table of disks
// each, and the reason of every disk that failed.
func printEraseReport(w io.Writer, rep api.EraseReport, all bool) {
	if len(rep.Reports) == 0 {
		fmt.Fprintf(w, "machine %s has no erase report yet: one is made by each release\n", rep.Machine)
		return
	}
	reps := rep.Reports
	if !all {
		reps = reps[len(reps)-1:]
	}
	for i, r := range reps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		result := "PASSED: every disk erased and verified"
		if !r.Passed {
			result = "FAILED"
		}
		tenant := ""
		if r.Tenant != "" {
			tenant = ", tenant " + r.Tenant
		}
		fmt.Fprintf(w, "machine %s, release %s%s, reported %s: %s\n", rep.Machine, r.Job, tenant, when(r.Reported), result)
		var rows [][]string
		var failed []string
		for _, d := range r.Disks {
			rows = append(rows, []string{d.Disk, orDash(d.Model), orDash(d.Serial), diskSize(d.SizeBytes),
				orDash(string(d.Method)), orDash(string(d.Level)), string(d.Result), when(d.Started), when(d.Ended), verification(d.Verification)})
			if d.Result != wire.ErasePassed {
				failed = append(failed, fmt.Sprintf("  %s: %s", d.Disk, orDash(d.Error)))
			}
		}
		printTable(w, []string{"DISK", "MODEL", "SERIAL", "SIZE", "METHOD", "LEVEL", "RESULT", "STARTED", "ENDED", "VERIFIED"}, rows)
		if len(failed) > 0 {
			fmt.Fprintf(w, "failed:\n%s\n", strings.Join(failed, "\n"))
		}
	}
}

func diskSize(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func verification(v wire.EraseVerification) string {
	if v.Samples == 0 {
		return orDash(v.Summary)
	}
	s := fmt.Sprintf("%d/%d samples clean", v.Samples-v.Canary, v.Samples)
	if v.FullReadBack {
		s += ", all bytes zero"
	}
	return s
}
