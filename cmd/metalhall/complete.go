package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

// completionTimeout bounds the one request a completion makes: a shell
// waits on it with the user's finger on the Tab key.
const completionTimeout = 2 * time.Second

// rawArgsKey carries the command line as typed into the context, for
// completion: urfave/cli hands a completion function only what its flag
// parser left, which loses the word before the cursor.
type rawArgsKey struct{}

func withRawArgs(ctx context.Context, args []string) context.Context {
	return context.WithValue(ctx, rawArgsKey{}, args)
}

// guardCompletion keeps a completion request from running a command.
// urfave/cli turns completion off when a word is "--" and runs the
// command line instead, "--generate-bash-completion" taken for a name:
// `metalhall site create --<TAB>` would create a site. A "--" being
// completed becomes "-" (every flag is offered); after a "--" in the
// line, every word is a name and nothing is offered (nil). Other command
// lines are returned as they are.
func guardCompletion(args []string) []string {
	n := len(args)
	if n < 2 || args[n-1] != "--generate-bash-completion" {
		return args
	}
	args = slices.Clone(args)
	if args[n-2] == "--" {
		args[n-2] = "-"
	}
	if slices.Contains(args, "--") {
		return nil
	}
	return args
}

// addNameCompletion gives every command that runs something a completion
// function (urfave/cli's BashComplete) that completes, by asking the
// service, the names of the objects it takes: `machine show <TAB>` lists
// machines, `--rack <TAB>` racks. group is the command the commands belong
// to ("" at the top).
func addNameCompletion(cmds []*cli.Command, group string) {
	for _, c := range cmds {
		if len(c.Subcommands) > 0 {
			addNameCompletion(c.Subcommands, c.Name)
			continue
		}
		if c.SkipFlagParsing {
			continue
		}
		c.BashComplete = completeCommand(positionalKind(group, c))
	}
}

// positionalKind is the kind of object whose name a command takes as its
// argument, "" when it takes none: a command of the machine group that
// ends its usage with a name (machine show NAME) takes a machine's name,
// unless it makes a new one (create, enroll, import).
func positionalKind(group string, c *cli.Command) string {
	if group == "" && c.Name == "completion" {
		return "shell"
	}
	if !listable(group) || slices.Contains([]string{"create", "enroll", "import", "list"}, c.Name) {
		return ""
	}
	usage, _, _ := strings.Cut(c.UsageText, "\n\n")
	words := strings.Fields(usage)
	if len(words) < 2 {
		return ""
	}
	last, before := words[len(words)-1], words[len(words)-2]
	if last != strings.ToUpper(last) || strings.Trim(last, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != "" || strings.HasPrefix(before, "-") {
		return ""
	}
	return group
}

// flagKind is the kind of object a flag names, "" for other flags.
func flagKind(name string) string {
	switch name {
	case "site", "hall", "rack", "machine", "image", "tenant", "profile":
		return name
	case "output", "o":
		return "output"
	}
	return ""
}

func listable(kind string) bool {
	switch kind {
	case "site", "hall", "rack", "machine", "image", "tenant", "subnet", "token", "profile":
		return true
	}
	return false
}

// completeCommand prints the words that may come next on a command line
// that ends with the word being completed (the shell scripts of
// `metalhall completion` always pass it, "" included): the value of the
// flag before it, a flag, or the name the command takes. It prints nothing
// when it has nothing to offer or the service does not answer, and the
// shell then completes file names.
func completeCommand(kind string) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		words, _ := c.Context.Value(rawArgsKey{}).([]string)
		if words == nil {
			words = os.Args
		}
		if n := len(words); n > 0 && words[n-1] == "--generate-bash-completion" {
			words = words[:n-1]
		}
		if len(words) < 2 {
			return
		}
		cur, prev := words[len(words)-1], words[len(words)-2]
		if strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=") {
			name := strings.TrimLeft(prev, "-")
			if f := lookupFlag(c, name); f != nil && takesValue(f) {
				printNames(c, flagKind(name))
				return
			}
		}
		if strings.HasPrefix(cur, "-") {
			printFlags(c, strings.TrimLeft(cur, "-"))
			return
		}
		// The word being completed is the last argument; any before it
		// already took the command's one name.
		if kind != "" && c.NArg() <= 1 {
			printNames(c, kind)
		}
	}
}

// lookupFlag finds a flag of the command or of the app (global flags).
func lookupFlag(c *cli.Context, name string) cli.Flag {
	for _, fs := range [][]cli.Flag{c.Command.Flags, c.App.Flags} {
		for _, f := range fs {
			if slices.Contains(f.Names(), name) {
				return f
			}
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	if tv, ok := f.(interface{ TakesValue() bool }); ok {
		return tv.TakesValue()
	}
	return true
}

// printFlags prints the command's and the global flags that begin with
// prefix (both work after the command: see reorderArgs).
func printFlags(c *cli.Context, prefix string) {
	for _, fs := range [][]cli.Flag{c.Command.Flags, c.App.Flags} {
		for _, f := range fs {
			if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
				continue
			}
			if n := f.Names()[0]; strings.HasPrefix(n, prefix) {
				fmt.Fprintln(c.App.Writer, "--"+n)
			}
		}
	}
}

// printNames prints the names of every object of the kind the caller may
// see, one a line. Errors print nothing: a completion that cannot reach
// the service, or is not allowed to list, offers nothing rather than
// writing into the user's command line.
func printNames(c *cli.Context, kind string) {
	var names []string
	switch kind {
	case "":
		return
	case "shell":
		names = []string{"bash", "zsh", "fish"}
	case "output":
		names = []string{"table", "json"}
	default:
		server, err := serverURL(c.String("server"), tlsGiven(c))
		if err != nil {
			return
		}
		cl := api.NewClient(server, c.String("token"))
		if err := cl.UseTLS(tlsOptions(c)); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(c.Context, completionTimeout)
		defer cancel()
		if names, err = listNames(ctx, cl, kind); err != nil {
			return
		}
	}
	for _, n := range names {
		fmt.Fprintln(c.App.Writer, n)
	}
}

// listNames asks the service for the names of every object of a kind.
func listNames(ctx context.Context, cl *api.Client, kind string) ([]string, error) {
	switch kind {
	case "site":
		l, err := api.Call(ctx, cl, api.Ops.SiteList(), api.NoBody{})
		return pluck(l, err, func(s inventory.Site) string { return s.Name })
	case "hall":
		l, err := api.Call(ctx, cl, api.Ops.HallList(), api.NoBody{})
		return pluck(l, err, func(h inventory.Hall) string { return h.Name })
	case "rack":
		l, err := api.Call(ctx, cl, api.Ops.RackList(), api.NoBody{})
		return pluck(l, err, func(r inventory.Rack) string { return r.Name })
	case "machine":
		l, err := api.Call(ctx, cl, api.Ops.MachineList(), api.NoBody{})
		return pluck(l, err, func(m api.Machine) string { return m.Name })
	case "image":
		// The reference staff type for a tenant's private image too.
		l, err := api.Call(ctx, cl, api.Ops.ImageList(), api.NoBody{})
		return pluck(l, err, func(i api.Image) string { return i.Ref })
	case "tenant":
		l, err := api.Call(ctx, cl, api.Ops.TenantList(), api.NoBody{})
		return pluck(l, err, func(t inventory.Tenant) string { return t.Name })
	case "subnet":
		l, err := api.Call(ctx, cl, api.Ops.SubnetList(), api.NoBody{})
		return pluck(l, err, func(s inventory.Subnet) string { return s.Name })
	case "token":
		l, err := api.Call(ctx, cl, api.Ops.TokenList(), api.NoBody{})
		return pluck(l, err, func(t api.Token) string { return t.ID })
	case "profile":
		l, err := api.Call(ctx, cl, api.Ops.ProfileList(), api.NoBody{})
		return pluck(l, err, func(p api.ProfileSummary) string { return p.Name })
	}
	return nil, fmt.Errorf("no names for %q", kind)
}

// pluck is the name of each item of a list answer.
func pluck[T any](items []T, err error, name func(T) string) ([]string, error) {
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, name(it))
	}
	return out, nil
}
