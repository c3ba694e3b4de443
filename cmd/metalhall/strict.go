package main

import (
	"maps"
	"reflect"
	"strings"

	"github.com/urfave/cli/v2"
)

// makeStrict gives every command the same answer to a bad command line:
// one line on stderr, nothing on stdout, exit status 2. urfave/cli prints
// the whole help to stdout on a parse error or a missing required flag,
// which a script capturing stdout then parses as output. So parse errors
// are returned as they are, required flags are checked here instead, and
// "list" commands, which take no names, refuse one; --output is checked
// before a request is sent. It returns the flags it made optional for
// urfave/cli and checks itself: the reference (docs/cli-reference.md)
// still calls them required.
func makeStrict(cmds []*cli.Command) requiredFlags {
	all := requiredFlags{}
	for _, c := range cmds {
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return err }
		if len(c.Subcommands) > 0 {
			maps.Copy(all, makeStrict(c.Subcommands))
			continue
		}
		var required []string
		for _, f := range c.Flags {
			if rf, ok := f.(cli.RequiredFlag); ok && rf.IsRequired() && clearRequired(f) {
				required = append(required, f.Names()[0])
				all[f] = true
			}
		}
		takesNoArgs := c.Name == "list"
		before := c.Before
		c.Before = func(ctx *cli.Context) error {
			var missing []string
			for _, n := range required {
				if !ctx.IsSet(n) {
					missing = append(missing, "--"+n)
				}
			}
			if len(missing) > 0 {
				verb := "is"
				if len(missing) > 1 {
					verb = "are"
				}
				return usagef("%s: %s %s required (see --help)", ctx.Command.FullName(), strings.Join(missing, ", "), verb)
			}
			// A bad --output is refused before anything is sent, not
			// after the request it was to print.
			if _, err := outputFormat(ctx); err != nil {
				return err
			}
			if takesNoArgs {
				if err := noArgs(ctx); err != nil {
					return err
				}
			}
			if before != nil {
				return before(ctx)
			}
			return nil
		}
	}
	return all
}

// requiredFlags are the flags a command checks are given (see makeStrict).
type requiredFlags map[cli.Flag]bool

// requiredFlagsKey is where newApp keeps them, in the App's Metadata.
const requiredFlagsKey = "metalhall.required-flags"

// clearRequired turns off a flag's Required field (every urfave/cli flag
// type, and altsrc's wrappers of them, has one).
func clearRequired(f cli.Flag) bool {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return false
	}
	r := v.Elem().FieldByName("Required")
	if !r.IsValid() || r.Kind() != reflect.Bool || !r.CanSet() {
		return false
	}
	r.SetBool(false)
	return true
}
