// Command metalhall-agent is the in-RAM provisioning agent. As PID 1 of
// its initramfs it does the job named on the kernel command line; run by
// hand it offers subcommands for testing the same code paths.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/metalhall/metalhall/agent"
	"github.com/metalhall/metalhall/agent/wire"
)

const usage = `usage:
  metalhall-agent inspect [--root DIR]
  metalhall-agent write --url URL --target FILE --sha256 HEX --size N [--format raw|raw.gz|raw.zst|raw.xz] [--token T]
  metalhall-agent wipe --target FILE [--mode fast|full]
As PID 1 (in the initramfs) it runs the task from /proc/cmdline.
`

func main() {
	if os.Getpid() == 1 {
		agent.Boot() // never returns
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "metalhall-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("no subcommand")
	}
	log := slog.New(agent.NewConsoleHandler(os.Stderr, slog.LevelInfo))
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "inspect":
		root := fs.String("root", "/", "where proc/ and sys/ are")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		inv, err := agent.Inspect(*root)
		if err != nil {
			return err
		}
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(inv)
	case "write":
		url := fs.String("url", "", "image URL")
		target := fs.String("target", "", "block device or file to write")
		sum := fs.String("sha256", "", "sha256 of the uncompressed image")
		size := fs.Int64("size", 0, "uncompressed size in bytes")
		format := fs.String("format", "raw", "raw, raw.gz, raw.zst or raw.xz")
		token := fs.String("token", "", "bearer token for the image server")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *url == "" || *target == "" {
			return fmt.Errorf("write: --url and --target are required")
		}
		o := agent.WriteOptions{
			Image:  wire.ImageSpec{URL: *url, Format: *format, SHA256: *sum, UncompressedSize: *size},
			Target: *target, Log: log, ProgressEvery: 2 * time.Second,
			Progress: func(p wire.Progress) {
				log.Info("progress", "step", p.Step, "bytes", p.Bytes, "total", p.Total, "MB/s", p.Rate/1e6)
			},
		}
		if *token != "" {
			o.Fetch.Header = http.Header{"Authorization": {"Bearer " + *token}}
		}
		res, err := agent.WriteImage(ctx, o)
		if err != nil {
			return err
		}
		log.Info("written", "bytes", res.Bytes, "written", res.Written, "skipped", res.Skipped, "resumes", res.Resumes, "elapsed", res.Elapsed, "sha256", res.SHA256)
		return nil
	case "wipe":
		target := fs.String("target", "", "block device or file to wipe")
		mode := fs.String("mode", "fast", "fast or full")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		res, err := agent.Wipe(ctx, *target, wire.WipeMode(*mode), nil)
		if err != nil {
			return err
		}
		log.Info("wiped", "target", res.Target, "mode", res.Mode, "size", res.Size, "discarded", res.Discarded, "zeroed", res.Zeroed)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown subcommand %q (want %s)", args[0], strings.Join([]string{"inspect", "write", "wipe"}, ", "))
}
