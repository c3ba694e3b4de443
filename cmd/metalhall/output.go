package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table for people, json for scripts"}
}

// outputFormat is the innermost --output given, the command's or the
// app's.
func outputFormat(c *cli.Context) (string, error) {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("output") {
			return checkFormat(ctx.String("output"))
		}
	}
	return checkFormat(c.String("output"))
}

func checkFormat(f string) (string, error) {
	if f != "table" && f != "json" {
		return "", usagef("--output %q: use table or json", f)
	}
	return f, nil
}

// client is the API client for the global --server and --token.
func client(c *cli.Context) *api.Client {
	// Checked once, before any command runs (see checkTLSFlags): errors
	// here cannot happen.
	server, _ := serverURL(c.String("server"), tlsGiven(c))
	cl := api.NewClient(server, c.String("token"))
	_ = cl.UseTLS(tlsOptions(c))
	return cl
}

func tlsOptions(c *cli.Context) api.TLSOptions {
	return api.TLSOptions{Fingerprint: c.String("tls-fingerprint"), CAFile: c.String("ca-file")}
}

func tlsGiven(c *cli.Context) bool {
	return c.String("tls-fingerprint") != "" || c.String("ca-file") != ""
}

// checkTLSFlags refuses a malformed server address, pin or an unreadable
// CA file before a command sends anything.
func checkTLSFlags(c *cli.Context) error {
	server, err := serverURL(c.String("server"), tlsGiven(c))
	if err != nil {
		return err
	}
	if err := api.NewClient(server, "").UseTLS(tlsOptions(c)); err != nil {
		return usagef("%v (--tls-fingerprint / --ca-file)", err)
	}
	return nil
}

// show prints v as JSON, or calls table to print it for people.
func show(c *cli.Context, v any, table func(w io.Writer)) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if format == "json" {
		return writeJSON(w, v, false)
	}
	table(w)
	return nil
}

// printTable aligns rows under headers.
func printTable(w io.Writer, headers []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, r := range rows {
		r = cleanAll(r)
		for i, h := range headers {
			if i < len(r) && freeText[h] {
				r[i] = clip(r[i], freeTextWidth)
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// freeText are the columns that hold what people and BMCs write — a
// failure reason, an error, a description — which can run to hundreds of
// characters and would push every other column off the screen. A table
// clips them to freeTextWidth with an ellipsis; -o json and show print
// them whole.
var freeText = map[string]bool{"REASON": true, "DETAIL": true, "ERROR": true, "DESCRIPTION": true, "MESSAGE": true, "LABEL": true}

const freeTextWidth = 72

// clean neutralises control characters in text that came from the service
// (names, reasons, agent messages) before it reaches a terminal: an
// escape sequence in a machine's failure reason must not move the cursor,
// retitle the window or hide lines. They are shown escaped, as \x1b.
func clean(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// isControl is C0 (tab and newline included: they break tables), DEL and C1.
func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }

func cleanAll(cells []string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = clean(c)
	}
	return out
}

// printFields prints "key: value" lines, aligned.
func printFields(w io.Writer, kv ...string) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], clean(kv[i+1]))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// name is the single positional argument most commands take.
func name(c *cli.Context, what string) (string, error) {
	switch c.NArg() {
	case 1:
		return c.Args().First(), nil
	case 0:
		return "", usagef("%s: which %s? give its name as the last argument", c.Command.FullName(), what)
	}
	return "", usagef("%s: expected one %s name, got %q", c.Command.FullName(), what, c.Args().Slice())
}

func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("%s takes no arguments, got %q", c.Command.FullName(), c.Args().Slice())
	}
	return nil
}

// nowIn says where something stands after a change of state, in words:
// "is in maintenance", "is now active" (not "is maintenance").
func nowIn(state string) string {
	if state == "maintenance" {
		return "is in maintenance"
	}
	return "is now " + state
}
