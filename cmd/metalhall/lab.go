package main

import (
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/lab/rack"
	"github.com/metalhall/metalhall/lab/redfish"
)

func labCommand() *cli.Command {
	cmd := labBMCCommand()
	cmd.Subcommands = append(cmd.Subcommands, labRackCommands()...)
	return cmd
}

func labBMCCommand() *cli.Command {
	return &cli.Command{Name: "lab", Usage: "virtual hardware to try metalhall without a data centre", Subcommands: []*cli.Command{
		{Name: "bmc", Usage: "serve emulated Redfish BMCs on loopback until interrupted",
			UsageText: `metalhall lab bmc [-n 10] [-base-port 8000] [-host 127.0.0.1] [-user admin] [-password admin] [-latency 0s] [-gpus 8] [-power-on]

Each BMC is a DMTF-shaped Redfish service (sessions, power, boot override,
inventory) that bmclib drives unmodified. Enroll machines against them with
--bmc-protocol redfish --bmc-address http://127.0.0.1:PORT.`,
			SkipFlagParsing: true, // the emulator parses its own flags
			Action: func(c *cli.Context) error {
				log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
				return redfish.Run(c.Context, c.Args().Slice(), c.App.Writer, log)
			}},
	}}
}

func labRackCommands() []*cli.Command {
	return []*cli.Command{
		{Name: "up", Usage: "create a rack of QEMU machines behind Redfish and IPMI BMCs on a private network (root)",
			UsageText: `metalhall lab up [-machines 3] [-firmware bios|uefi|mixed] [-bmc redfish|ipmi|mixed] [-dir DIR]

Writes DIR/rack.yaml for 'metalhall rack import'. See docs/lab.md.`,
			SkipFlagParsing: true,
			Action: func(c *cli.Context) error {
				return rack.RunUp(c.Context, c.Args().Slice(), c.App.Writer)
			}},
		{Name: "down", Usage: "remove everything 'lab up' created, also after a crash (idempotent)",
			UsageText: "metalhall lab down [-dir DIR]", SkipFlagParsing: true,
			Action: func(c *cli.Context) error { return rack.RunDown(c.Args().Slice(), c.App.Writer) }},
	}
}
