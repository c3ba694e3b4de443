// Package clidoc writes the command-line reference and the man pages of
// a urfave/cli/v2 application from its command tree, so that neither can
// say something the commands do not do: they are regenerated, never
// edited, and a test compares what is committed with what the tree gives.
package clidoc

import (
	"reflect"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// ExitStatus is one exit status of the program and what it means.
type ExitStatus struct {
	Code    int
	Meaning string
}

// Doc is what the reference is made from.
type Doc struct {
	App *cli.App
	// Exit lists the program's exit statuses.
	Exit []ExitStatus
	// Required says whether a flag must be given. The program may check
	// required flags itself (and so clear the flags' own Required field);
	// nil means the flags' Required field is the truth.
	Required func(cli.Flag) bool
	// Generator names what regenerates the files, for their headers.
	Generator string
}

// command is one visible command with its full name ("machine show").
type command struct {
	path []string
	cmd  *cli.Command
}

func (c command) fullName() string { return strings.Join(c.path, " ") }

// commands lists the visible commands depth first, in the order of the
// command table (the order of --help).
func commands(cmds []*cli.Command, prefix []string) []command {
	var out []command
	for _, c := range cmds {
		if c.Hidden || c.Name == "help" {
			continue
		}
		p := append(append([]string{}, prefix...), c.Name)
		out = append(out, command{p, c})
		out = append(out, commands(c.Subcommands, p)...)
	}
	return out
}

// flagDoc is what the reference says about one flag.
type flagDoc struct {
	names    []string // "--output", "-o"
	arg      string   // the value's placeholder; "" for a switch
	usage    string
	def      string
	env      []string
	required bool
}

func (d Doc) flags(fs []cli.Flag) []flagDoc {
	var out []flagDoc
	for _, f := range fs {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		fd := flagDoc{}
		for _, n := range f.Names() {
			if len(n) == 1 {
				fd.names = append(fd.names, "-"+n)
			} else {
				fd.names = append(fd.names, "--"+n)
			}
		}
		if g, ok := f.(cli.DocGenerationFlag); ok {
			fd.usage = g.GetUsage()
			fd.env = g.GetEnvVars()
			if g.TakesValue() {
				fd.arg = placeholder(f)
				fd.def = defaultText(g.GetDefaultText())
			}
		}
		if d.Required != nil {
			fd.required = d.Required(f)
		} else if r, ok := f.(cli.RequiredFlag); ok {
			fd.required = r.IsRequired()
		}
		out = append(out, fd)
	}
	return out
}

// placeholder names a flag's value by its type: "string", "int",
// "duration", ... ("value" when the type says nothing). altsrc's wrappers
// embed the cli flag they wrap, and are named by it.
func placeholder(f cli.Flag) string {
	t := reflect.TypeOf(f)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() == reflect.Struct && t.NumField() > 0 && t.Field(0).Anonymous {
		t = t.Field(0).Type
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	name := strings.TrimSuffix(t.Name(), "Flag")
	switch name {
	case "String", "Path", "Generic":
		return "value"
	case "StringSlice":
		return "value"
	case "Int", "Int64", "Uint", "Uint64":
		return "n"
	case "Float64":
		return "number"
	case "Duration":
		return "duration"
	case "Timestamp":
		return "time"
	}
	if strings.HasSuffix(name, "Slice") {
		return "n"
	}
	return "value"
}

// defaultText is a default worth printing: none for empty values, false
// switches and zero numbers, and without urfave/cli's quotes.
func defaultText(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		s = u
	}
	switch s {
	case "", "false", "0", "[]":
		return ""
	}
	return s
}

// usageText is what the command's help shows under USAGE.
func usageText(c command) string {
	if c.cmd.UsageText != "" {
		return strings.TrimRight(c.cmd.UsageText, "\n")
	}
	s := "metalhall " + c.fullName()
	if len(c.cmd.Subcommands) > 0 {
		return s + " COMMAND [flags]"
	}
	if len(c.cmd.Flags) > 0 {
		s += " [flags]"
	}
	if c.cmd.ArgsUsage != "" {
		s += " " + c.cmd.ArgsUsage
	}
	return s
}

// block is a paragraph of prose, or lines kept as written.
type block struct {
	lines []string
	pre   bool // keep line breaks and spacing
}

// paragraphs splits text into blocks at blank lines; within a paragraph,
// runs of indented lines (examples, aligned lists) are kept as written
// and the lines around them are prose.
func paragraphs(text string) []block {
	var out []block
	var cur block
	flush := func() {
		if len(cur.lines) > 0 {
			if cur.pre {
				dedent(cur.lines)
			}
			out = append(out, cur)
		}
		cur = block{}
	}
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		l = strings.TrimRight(strings.ReplaceAll(l, "\t", "    "), " ")
		if l == "" {
			flush()
			continue
		}
		pre := strings.HasPrefix(l, " ")
		if pre != cur.pre {
			flush()
			cur.pre = pre
		}
		cur.lines = append(cur.lines, l)
	}
	flush()
	return out
}

// dedent removes the indentation all lines share.
func dedent(lines []string) {
	common := -1
	for _, l := range lines {
		n := len(l) - len(strings.TrimLeft(l, " "))
		if common < 0 || n < common {
			common = n
		}
	}
	for i := range lines {
		lines[i] = lines[i][common:]
	}
}

// synopsisLines splits a usage text into the usage itself (up to the
// first blank line) and the explanation after it.
func synopsisLines(usage string) (syn, rest string) {
	if i := strings.Index(usage, "\n\n"); i >= 0 {
		return usage[:i], strings.TrimSpace(usage[i+2:])
	}
	return usage, ""
}

func flagSpelling(f flagDoc) string {
	s := strings.Join(f.names, ", ")
	if f.arg != "" {
		s += " " + f.arg
	}
	return s
}
