// Command metalhall runs the metalhall service (`metalhall serve`) and is
// the command-line client of its API (every other command). See
// docs/cli.md and `metalhall --help`.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

// version is set at build time with -ldflags '-X main.version=...'.
var version = "dev"

// Exit statuses scripts can branch on.
const (
	exitError       = 1 // the request was refused or failed
	exitUsage       = 2 // the command line was wrong
	exitUnreachable = 3 // no service answered
	exitAuth        = 4 // the token was missing, invalid or not allowed
	exitNotFound    = 5 // the named object does not exist (or is not yours)
	exitConflict    = 6 // refused by a state machine, placement or budget rule
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status. Errors are
// printed as one line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWithInput(ctx, args, nil, stdout, stderr)
}

// runWithInput is run with stdin given (nil: the process's), for the
// commands that read the keyboard (machine console).
func runWithInput(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	app.Reader = stdin
	if args = guardCompletion(args); args == nil {
		return 0
	}
	err := app.RunContext(withRawArgs(ctx, args), reorderArgs(app, args))
	if err == nil {
		return 0
	}
	msg, code := explain(err)
	fmt.Fprintln(stderr, "metalhall: "+msg)
	return code
}

func explain(err error) (string, int) {
	var ae *api.APIError
	var ue *api.Unreachable
	var usage usageError
	var pin *api.PinMismatch
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &pin):
		return pin.Error() + ": compare --tls-fingerprint / METALHALL_TLS_FINGERPRINT with DATA_DIR/tls.fingerprint on the service", exitUnreachable
	case errors.As(err, &unknownCA), errors.As(err, &hostname):
		return err.Error() + ": pin the service's certificate with --tls-fingerprint (DATA_DIR/tls.fingerprint on the service) or give its CA with --ca-file", exitUnreachable
	case errors.As(err, &ue):
		return ue.Error(), exitUnreachable
	case errors.As(err, &ae):
		switch ae.Status {
		case 401, 403:
			return ae.Message, exitAuth
		case 400:
			// A value the service found invalid is a bad command line
			// (or manifest) too: the same status as one refused here.
			return ae.Message, exitUsage
		case 404:
			return ae.Message, exitNotFound
		case 409:
			return ae.Message, exitConflict
		}
		return ae.Message, exitError
	case errors.As(err, &usage):
		return usage.Error(), exitUsage
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "flag provided but not defined") || strings.HasPrefix(msg, "Required flag") ||
		strings.HasPrefix(msg, "invalid value") || strings.HasPrefix(msg, "No help topic") {
		return msg + " (see --help)", exitUsage
	}
	return msg, exitError
}

// usageError is a command line that cannot be right.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:    "metalhall",
		Usage:   "bare-metal provisioning and rack lifecycle for GPU data centres",
		Version: version,
		Description: `metalhall serve runs the service; every other command is a client of its API.

Flags go before or after the name: 'metalhall rack show a01 -o json'; after
'--' everything is a name. --server takes a URL or host:port.
Exit status: 0 ok, 1 refused or failed, 2 bad command line or value, 3 no service,
4 token missing or not allowed, 5 not found, 6 refused by a lifecycle,
placement or power rule.`,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		// Errors are printed once, by run, as one line.
		ExitErrHandler: func(*cli.Context, error) {},
		Before:         checkTLSFlags,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", Value: "http://127.0.0.1:8280", EnvVars: []string{"METALHALL_SERVER"}, Usage: "URL of the metalhall service"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"METALHALL_TOKEN"}, Usage: "API token (the first admin token is in DATA_DIR/admin.token)"},
			&cli.StringFlag{Name: "tls-fingerprint", EnvVars: []string{"METALHALL_TLS_FINGERPRINT"}, Usage: "SHA-256 fingerprint of the service's TLS certificate to trust (the service writes it to DATA_DIR/tls.fingerprint)"},
			&cli.StringFlag{Name: "ca-file", EnvVars: []string{"METALHALL_CA_FILE"}, Usage: "PEM CA bundle the service's TLS certificate must chain to (instead of the system's)"},
			outputFlag(),
		},
		Commands: []*cli.Command{
			serveCommand(),
			siteCommand(), hallCommand(), phaseCommand(), rackWithAcceptance(), machineCommand(), profileCommand(),
			imageCommand(), subnetCommand(), tenantCommand(), tokenCommand(), auditCommand(), backupCommand(), restoreCommand(), storeCommand(), jobGroupCommand(),
			bootenvCommand(), labCommand(), completionCommand(),
		},
	}
	addUpdateCommands(app.Commands)
	addNameCompletion(app.Commands, "")
	hideLeafHelpCommands(app.Commands)
	app.Metadata = map[string]any{requiredFlagsKey: makeStrict(app.Commands)}
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return err }
	return app
}

// hideLeafHelpCommands stops urfave/cli from adding a "help" (alias "h")
// subcommand to commands that take a name: otherwise `metalhall hall create
// --site s h` shows help instead of creating hall "h". --help still works.
func hideLeafHelpCommands(cmds []*cli.Command) {
	for _, c := range cmds {
		if len(c.Subcommands) == 0 {
			c.HideHelpCommand = true
		}
		hideLeafHelpCommands(c.Subcommands)
	}
}
