// Command metalhall-lab serves virtual hardware to try and test metalhall
// without a data centre: emulated Redfish BMCs on loopback (`bmc`) and
// racks of QEMU machines behind Redfish and IPMI BMCs on a private network
// namespace (`up`, `down`). It is a binary of its own so that the product
// binary, metalhall, links none of the lab's rigs. See docs/lab.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/lab/rack"
	"github.com/metalhall/metalhall/lab/redfish"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status: 0, or 1
// with one line on stderr. -h/--help print the subcommand's flags and
// exit 0.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).RunContext(ctx, args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "metalhall-lab: "+err.Error())
	return 1
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "metalhall-lab",
		Usage: "virtual hardware to try metalhall without a data centre",
		Description: `Emulated BMCs and virtual racks for trying and testing metalhall. This is
not the product: the service and its CLI are the metalhall binary.`,
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {}, // run prints errors once
		Commands: []*cli.Command{
			{Name: "bmc", Usage: "serve emulated Redfish BMCs on loopback until interrupted",
				UsageText: `metalhall-lab bmc [-n 10] [-base-port 8000] [-host 127.0.0.1] [-user admin] [-password admin] [-latency 0s] [-gpus 8] [-power-on]

Each BMC is a DMTF-shaped Redfish service (sessions, power, boot override,
inventory) that bmclib drives unmodified. Enroll machines against them with
metalhall machine enroll --bmc-protocol redfish --bmc-address http://127.0.0.1:PORT.`,
				SkipFlagParsing: true, // the emulator parses its own flags
				HideHelpCommand: true,
				Action: func(c *cli.Context) error {
					log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
					return redfish.Run(c.Context, c.Args().Slice(), c.App.Writer, log)
				}},
			{Name: "up", Usage: "create a rack of QEMU machines behind Redfish and IPMI BMCs on a private network (root)",
				UsageText: `metalhall-lab up [-machines 3] [-firmware bios|uefi|mixed] [-bmc redfish|ipmi|mixed] [-dir DIR]

Writes DIR/rack.yaml for 'metalhall rack import'. See docs/lab.md.`,
				SkipFlagParsing: true,
				HideHelpCommand: true,
				Action: func(c *cli.Context) error {
					return rack.RunUp(c.Context, c.Args().Slice(), c.App.Writer)
				}},
			{Name: "down", Usage: "remove everything 'up' created, also after a crash (idempotent)",
				UsageText:       "metalhall-lab down [-dir DIR]",
				SkipFlagParsing: true,
				HideHelpCommand: true,
				Action: func(c *cli.Context) error {
					return rack.RunDown(c.Args().Slice(), c.App.Writer)
				}},
		},
	}
}
