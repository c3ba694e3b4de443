package main

import (
	"net"
	"net/url"
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs moves every flag in front of the positional arguments of the
// command it belongs to, so `rack show a01 -o json` means what
// `rack show -o json a01` means. urfave/cli v2 (like Go's flag package)
// stops parsing flags at the first positional argument; kubectl and
// openstack users put flags last all the time.
//
// It walks the command tree the way urfave/cli will: a token that names a
// subcommand descends; a flag is looked up on the current command and then
// on its ancestors (a global flag such as --server given after the command
// moves to the front); a flag that takes a value keeps the next token as
// that value even when it looks positional ("--reason down"), and a value
// glued with '=' stays glued. After "--" everything is positional.
// Positionals keep their order, behind a "--" when one of them begins with
// '-' so it is not taken for a flag. Unknown flags stay where the command
// sees them, so urfave/cli's own error names them. Shell completion
// requests and commands that parse their own flags are left alone.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	for _, a := range args {
		if a == "--generate-bash-completion" {
			return args
		}
	}
	levels := []*argLevel{{flags: app.Flags}}
	subs := app.Commands
	var positional []string
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			positional = append(positional, rest[i+1:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && a != "-":
			name, glued := flagName(a)
			target, takesValue := findFlag(levels, name)
			target.got = append(target.got, a)
			if takesValue && !glued && i+1 < len(rest) {
				i++
				target.got = append(target.got, rest[i])
			}
		default:
			if len(positional) == 0 {
				if cmd := findCommand(subs, a); cmd != nil {
					if cmd.SkipFlagParsing {
						// It reads its own arguments, verbatim.
						return joinLevels(args[0], levels, append([]string{a}, rest[i+1:]...))
					}
					levels = append(levels, &argLevel{name: a, flags: cmd.Flags})
					subs = cmd.Subcommands
					continue
				}
				if len(subs) > 0 {
					// Not a subcommand of a command that has some ("rack
					// bogus", "rack help"): leave the rest to urfave/cli.
					return joinLevels(args[0], levels, rest[i:])
				}
			}
			positional = append(positional, a)
		}
	}
	for _, p := range positional {
		if strings.HasPrefix(p, "-") && p != "-" {
			positional = append([]string{"--"}, positional...)
			break
		}
	}
	return joinLevels(args[0], levels, positional)
}

// argLevel is the app or one command on the path to the command run, with
// the flags given for it.
type argLevel struct {
	name  string // "" for the app
	flags []cli.Flag
	got   []string
}

func joinLevels(prog string, levels []*argLevel, tail []string) []string {
	out := []string{prog}
	for _, l := range levels {
		if l.name != "" {
			out = append(out, l.name)
		}
		out = append(out, l.got...)
	}
	return append(out, tail...)
}

// flagName is the name in "-o", "--output" or "--output=json", and whether
// its value is glued to it.
func flagName(a string) (string, bool) {
	n := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if i := strings.IndexByte(n, '='); i >= 0 {
		return n[:i], true
	}
	return n, false
}

// findFlag finds the innermost level that defines the flag, and whether
// the flag takes a value. A flag no level knows stays with the innermost
// command, whose parser then names it; -h/--help is every command's.
func findFlag(levels []*argLevel, name string) (*argLevel, bool) {
	inner := levels[len(levels)-1]
	if name == "help" || name == "h" {
		return inner, false
	}
	for i := len(levels) - 1; i >= 0; i-- {
		for _, f := range levels[i].flags {
			for _, n := range f.Names() {
				if n == name {
					if tv, ok := f.(interface{ TakesValue() bool }); ok {
						return levels[i], tv.TakesValue()
					}
					return levels[i], true
				}
			}
		}
	}
	if name == "version" || name == "v" {
		return levels[0], false
	}
	return inner, false
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// serverURL turns --server / METALHALL_SERVER into the URL the client
// uses. A bare host:port (or host) is accepted, as scripts write it: plain
// http on a loopback host, where the admin listener serves plain HTTP
// unless told otherwise, https when a TLS pin or CA is given or the host is
// not loopback (the admin listener serves TLS there). A URL must be http or
// https and name a host.
func serverURL(raw string, tlsGiven bool) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", usagef("--server is empty: give the service's URL or host:port, e.g. http://127.0.0.1:8280")
	}
	if !strings.Contains(s, "://") {
		host := s
		switch h, _, err := net.SplitHostPort(s); {
		case err == nil:
			host = h
		case net.ParseIP(s) != nil && strings.Contains(s, ":"):
			s = "[" + s + "]:8280" // a bare IPv6 address
		case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
			host = strings.Trim(s, "[]")
			s += ":8280"
		case !strings.Contains(s, ":"):
			s += ":8280"
		default:
			return "", usagef("--server %q is neither a URL nor host:port: %v", raw, err)
		}
		if host == "" {
			return "", usagef("--server %q has no host: give host:port, e.g. 127.0.0.1:8280", raw)
		}
		scheme := "https"
		if !tlsGiven && isLoopbackHost(host) {
			scheme = "http"
		}
		s = scheme + "://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", usagef("--server %q is not a URL or host:port: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", usagef("--server %q: the scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return "", usagef("--server %q has no host: e.g. http://127.0.0.1:8280", raw)
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil {
			return "", usagef("--server %q: port %q is not a port number", raw, p)
		}
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}
