package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

const labMoved = "the lab commands are in their own binary: metalhall-lab bmc|up|down (make build writes bin/metalhall-lab; see docs/lab.md and metalhall-lab --help)"

// labCommand answers where the lab went: its rigs (QEMU racks, BMC
// emulators) are in the metalhall-lab binary, so this one links none of
// them. Hidden: it is a signpost, not a command.
func labCommand() *cli.Command {
	return &cli.Command{Name: "lab", Hidden: true, SkipFlagParsing: true, HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			for _, a := range c.Args().Slice() {
				if a == "--help" || a == "-h" || a == "help" {
					// Asking for help is not an error; say where it is.
					fmt.Fprintln(c.App.Writer, labMoved)
					return nil
				}
			}
			return usagef("%s", labMoved)
		}}
}
