package main

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

// profileCommand is the hardware profiles: YAML files in the service's
// profiles directory, listed, shown, checked, written and removed through
// the API.
func profileCommand() *cli.Command {
	return &cli.Command{Name: "profile", Usage: "hardware profiles machines are commissioned against", Subcommands: []*cli.Command{
		{Name: "list", Usage: "list profiles; a broken one says what is wrong", Flags: []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.ProfileList(), api.NoBody{})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					rows := [][]string{}
					for _, p := range out {
						gpus := "-"
						if p.GPUCount > 0 {
							gpus = strings.TrimSpace(fmt.Sprintf("%d %s", p.GPUCount, p.GPUModel))
						}
						acc := "no"
						if p.Acceptance {
							acc = "yes"
						}
						if p.Error != "" {
							gpus, acc = "?", "?"
						}
						rows = append(rows, []string{p.Name, gpus, orDash(p.OSDisk), acc, strconv.Itoa(p.Machines), orDash(p.Error)})
					}
					printTable(w, []string{"NAME", "GPUS", "OS DISK", "ACCEPTANCE", "MACHINES", "ERROR"}, rows)
				})
			}},
		{Name: "show", Usage: "a profile: its YAML and the machines that name it", UsageText: "metalhall profile show NAME", Flags: []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "profile")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.ProfileShow(), api.NoBody{}, n)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { printProfile(w, n, &out) })
			}},
		{Name: "validate", Usage: "check a profile file as commissioning would read it; nothing is stored",
			UsageText: "metalhall profile validate FILE\n\nThe service checks it: fields, the acceptance suite, and os_disk on a GPU profile.",
			Flags:     []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				path, err := name(c, "profile file")
				if err != nil {
					return err
				}
				body, err := readProfileFile(path)
				if err != nil {
					return err
				}
				q := url.Values{"name": {strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))}}
				out, err := api.Call(c.Context, client(c), api.Ops.ProfileValidate().Query(q), api.Upload{ContentType: "application/yaml", Body: bytes.NewReader(body)})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "%s: a valid profile\n", path) })
			}},
		{Name: "import", Usage: "add or replace a profile from a YAML file, checked first",
			UsageText: "metalhall profile import --file FILE NAME\n\nMachines commissioned from now on are checked against the new version.",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "file", Required: true, Usage: "the profile's YAML (docs/provisioning.md, Hardware profiles)"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "profile")
				if err != nil {
					return err
				}
				body, err := readProfileFile(c.String("file"))
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.ProfileImport(), api.Upload{ContentType: "application/yaml", Body: bytes.NewReader(body)}, n)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					fmt.Fprintf(w, "profile %s imported (%d machines name it)\n", n, len(out.Machines))
				})
			}},
		deleteCommand("profile", "remove a profile no machine names", api.Ops.ProfileDelete()),
	}}
}

// readProfileFile reads a profile named on the command line; a file that
// cannot be read is a bad command line.
func readProfileFile(path string) ([]byte, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return body, nil
}

func printProfile(w io.Writer, n string, p *api.ProfileDetail) {
	fmt.Fprintf(w, "profile %s, named by %d machines: %s\n\n", n, len(p.Machines), orDash(strings.Join(p.Machines, ", ")))
	io.WriteString(w, cleanBlock(p.YAML))
}

// cleanBlock neutralises control characters line by line, keeping the
// newlines of a multi-line text.
func cleanBlock(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = clean(l)
	}
	return strings.Join(lines, "\n") + "\n"
}
