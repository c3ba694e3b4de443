package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/api"
)

const consoleHelp = "[~. leave · ~? this help · ~~ a ~ at the start of a line]\r\n"

func consoleCommand() *cli.Command {
	return &cli.Command{Name: "console", Usage: "attach to a machine's serial console through its BMC (IPMI Serial-over-LAN); ~. at the start of a line leaves",
		UsageText: "metalhall machine console [--force] NAME",
		Description: `The service opens the Serial-over-LAN session with the BMC (its credentials never
leave the service) and relays it: what you type goes to the machine's serial
port, what it prints comes back. One operator per machine at a time; staff may
take a session over with --force (the other operator is told, and let go).
A session with nothing typed or printed for 15 minutes is closed. Every
session is in the audit trail: who, when, how long, bytes each way.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "take over a session another operator has open (staff)"},
		},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			cl := client(c)
			// A session lasts as long as the operator wants: no overall
			// timeout (the service closes idle ones).
			hc := *cl.HTTP
			hc.Timeout = 0
			cl.HTTP = &hc
			op := api.Ops.MachineConsole()
			if c.Bool("force") {
				op = op.Query(url.Values{"force": {"true"}})
			}
			stdin := c.App.Reader
			if stdin == nil {
				stdin = os.Stdin
			}
			errw := c.App.ErrWriter
			kb, keys := io.Pipe()
			defer keys.Close() // a refused request leaves the transport nothing to wait for
			ctx, cancel := context.WithCancel(c.Context)
			defer cancel()
			screen, err := api.Call(ctx, cl, op, api.Upload{ContentType: "application/octet-stream", Body: kb, Stream: true}, n)
			if err != nil {
				return err
			}
			defer screen.Close()
			if f, ok := stdin.(*os.File); ok {
				if restore, err := rawTerminal(f); err == nil {
					defer restore()
				}
			}
			fmt.Fprintf(errw, "[connected to %s's serial console: ~. to leave, ~? for help]\r\n", n)
			go typeKeys(stdin, keys, errw, func() {
				// The service ends the session when the keyboard closes;
				// give it a moment to say so, then stop waiting.
				time.AfterFunc(5*time.Second, cancel)
			})
			_, err = io.Copy(c.App.Writer, screen)
			fmt.Fprintf(errw, "\r\n[left %s's serial console]\r\n", n)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("machine %s: console: %w", n, err)
			}
			return nil
		}}
}

// typeKeys copies the keyboard to the session, handling the escape
// sequences at the start of a line (like ssh's): "~." leaves, "~?" shows
// help, "~~" sends one "~". It closes keys when the operator leaves or the
// keyboard ends, and calls left then.
func typeKeys(stdin io.Reader, keys *io.PipeWriter, errw io.Writer, left func()) {
	defer left()
	defer keys.Close()
	buf := make([]byte, 1024)
	lineStart, pending := true, false
	for {
		n, err := stdin.Read(buf)
		out := make([]byte, 0, n+1)
		for _, b := range buf[:n] {
			switch {
			case pending:
				pending = false
				switch b {
				case '.':
					if len(out) > 0 {
						keys.Write(out)
					}
					return
				case '?':
					fmt.Fprint(errw, "\r\n"+consoleHelp)
					continue
				case '~':
					out = append(out, '~')
				default:
					out = append(out, '~', b)
				}
			case lineStart && b == '~':
				pending = true
				continue
			default:
				out = append(out, b)
			}
			lineStart = b == '\r' || b == '\n'
		}
		if len(out) > 0 {
			if _, werr := keys.Write(out); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// rawTerminal puts the terminal f in raw mode (keys go to the machine as
// typed: Ctrl-C included, no echo, no line editing) and returns what
// restores it. It fails when f is not a terminal.
func rawTerminal(f *os.File) (restore func(), err error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	t := *old
	// cfmakeraw(3)
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func consoleLogCommand() *cli.Command {
	return &cli.Command{Name: "console-log", Usage: "what a machine printed on its serial console during a job (default: its newest job with a log)",
		UsageText: "metalhall machine console-log [--job ID] [-o json] NAME",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "job", Usage: "the job (see 'metalhall job list --machine NAME --state all')"},
			outputFlag(),
		},
		Action: func(c *cli.Context) error {
			n, err := name(c, "machine")
			if err != nil {
				return err
			}
			op := api.Ops.MachineConsoleLog()
			if j := c.String("job"); j != "" {
				op = op.Query(url.Values{"job": {j}})
			}
			l, err := api.Call(c.Context, client(c), op, api.NoBody{}, n)
			if err != nil {
				return err
			}
			return show(c, l, func(w io.Writer) {
				cut := ""
				if l.Truncated {
					cut = fmt.Sprintf(", the last %d bytes of %d", len(l.Output), l.Captured)
				}
				fmt.Fprintf(w, "# machine %s, %s job %s: serial console as captured up to %s%s\n", l.Machine, l.Kind, l.Job,
					l.UpdatedAt.UTC().Format(time.RFC3339), cut)
				out := strings.ReplaceAll(l.Output, "\r\n", "\n")
				fmt.Fprint(w, out)
				if !strings.HasSuffix(out, "\n") {
					fmt.Fprintln(w)
				}
			})
		}}
}
