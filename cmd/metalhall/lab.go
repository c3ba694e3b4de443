package main

import (
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/lab/redfish"
)

func labCommand() *cli.Command {
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
