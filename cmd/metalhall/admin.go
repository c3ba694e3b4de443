package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
)

func subnetCommand() *cli.Command {
	return &cli.Command{Name: "subnet", Usage: "provisioning subnets", Subcommands: []*cli.Command{
		{Name: "create", Usage: "create a subnet", UsageText: "metalhall subnet create --cidr CIDR --gateway IP [--range FIRST-LAST] [--dns IP,...] NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "cidr", Required: true, Usage: "the subnet's network, e.g. 10.1.0.0/24"}, &cli.StringFlag{Name: "gateway", Required: true, Usage: "the router machines are given, inside the CIDR"},
				&cli.StringFlag{Name: "range", Usage: "dynamic range for machines not yet enrolled"}, &cli.StringFlag{Name: "dns", Usage: "DNS servers machines are given, comma-separated"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "subnet")
				if err != nil {
					return err
				}
				in := api.SubnetCreate{Name: n, CIDR: c.String("cidr"), Gateway: c.String("gateway"), Range: c.String("range")}
				if d := c.String("dns"); d != "" {
					in.DNS = strings.Split(d, ",")
				}
				out, err := api.Call(c.Context, client(c), api.Ops.SubnetCreate(), in)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "subnet %s created: %s via %s\n", out.Name, out.CIDR, out.Gateway) })
			}},
		{Name: "list", Usage: "list subnets", Flags: []cli.Flag{outputFlag()}, Action: func(c *cli.Context) error {
			out, err := api.Call(c.Context, client(c), api.Ops.SubnetList(), api.NoBody{})
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				rows := [][]string{}
				for _, s := range out {
					rng := "-"
					if s.RangeFirst != "" {
						rng = s.RangeFirst + "-" + s.RangeLast
					}
					rows = append(rows, []string{s.Name, s.CIDR, s.Gateway, rng, orDash(strings.Join(s.DNS, ","))})
				}
				printTable(w, []string{"NAME", "CIDR", "GATEWAY", "RANGE", "DNS"}, rows)
			})
		}},
	}}
}

func tenantCommand() *cli.Command {
	return &cli.Command{Name: "tenant", Usage: "tenants and what is assigned to them", Subcommands: []*cli.Command{
		{Name: "create", Usage: "create a tenant", UsageText: "metalhall tenant create [--description TEXT] NAME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "description", Usage: "free text: the customer's name, a contact, a contract"}, outputFlag()},
			Action: func(c *cli.Context) error {
				n, err := name(c, "tenant")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.TenantCreate(), api.TenantCreate{Name: n, Description: c.String("description")})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "tenant %s created\n", out.Name) })
			}},
		{Name: "list", Usage: "list tenants", Flags: []cli.Flag{outputFlag()}, Action: func(c *cli.Context) error {
			out, err := api.Call(c.Context, client(c), api.Ops.TenantList(), api.NoBody{})
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				rows := [][]string{}
				for _, t := range out {
					rows = append(rows, []string{t.Name, orDash(t.Description), when(t.CreatedAt)})
				}
				printTable(w, []string{"NAME", "DESCRIPTION", "CREATED"}, rows)
			})
		}},
		tenantMoveCommand("assign", api.Ops.TenantAssign(), "hand a rack (and its machines) or one machine to a tenant", "assigned to"),
		tenantMoveCommand("unassign", api.Ops.TenantUnassign(), "take a released rack (and its machines) or machine back from a tenant", "taken back from"),
	}}
}

// tenantMoveCommand is tenant assign and unassign: one rack or one
// machine, to or from the tenant named.
func tenantMoveCommand(verb string, op api.Op[api.TenantAssign, api.TenantAssign], usage, done string) *cli.Command {
	return &cli.Command{Name: verb, Usage: usage,
		UsageText: "metalhall tenant " + verb + " --tenant TENANT (--rack RACK | --machine MACHINE)",
		Flags:     []cli.Flag{&cli.StringFlag{Name: "tenant", Required: true, Usage: "the tenant"}, &cli.StringFlag{Name: "rack", Usage: "a rack, with every machine in it"}, &cli.StringFlag{Name: "machine", Usage: "one machine"}, outputFlag()},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			in := api.TenantAssign{Rack: c.String("rack"), Machine: c.String("machine")}
			if (in.Rack == "") == (in.Machine == "") {
				return usagef("tenant %s: give exactly one of --rack or --machine", verb)
			}
			out, err := api.Call(c.Context, client(c), op, in, c.String("tenant"))
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				what := "rack " + in.Rack
				if in.Machine != "" {
					what = "machine " + in.Machine
				}
				fmt.Fprintf(w, "%s %s tenant %s\n", what, done, c.String("tenant"))
			})
		}}
}

func tokenCommand() *cli.Command {
	return &cli.Command{Name: "token", Usage: "API tokens (admin)", Subcommands: []*cli.Command{
		{Name: "create", Usage: "create a token; its secret is printed once",
			UsageText: "metalhall token create --role admin|technician|tenant [--tenant TENANT] [--label TEXT] [--ttl 90d|720h]",
			Flags: []cli.Flag{&cli.StringFlag{Name: "role", Required: true, Usage: "admin, technician or tenant"}, &cli.StringFlag{Name: "tenant", Usage: "the tenant a tenant token acts for (with --role tenant)"}, &cli.StringFlag{Name: "label", Usage: "a name for people and for audit list --actor, e.g. ops-day"},
				&cli.StringFlag{Name: "ttl", Usage: "how long the token works, e.g. 90d or 720h (default: admin 30d, technician 90d, tenant 365d)"}, outputFlag()},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.TokenCreate(), api.TokenCreate{Role: c.String("role"), Tenant: c.String("tenant"), Label: c.String("label"), TTL: c.String("ttl")})
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					fmt.Fprintf(w, "token %s (%s, expires %s) created. Its secret, shown only now:\n%s\n", out.ID, out.Role, when(out.ExpiresAt), out.Secret)
				})
			}},
		{Name: "list", Usage: "list tokens", Flags: []cli.Flag{outputFlag()}, Action: func(c *cli.Context) error {
			out, err := api.Call(c.Context, client(c), api.Ops.TokenList(), api.NoBody{})
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				rows := [][]string{}
				for _, t := range out {
					state := "active"
					switch {
					case !t.RevokedAt.IsZero():
						state = "revoked " + when(t.RevokedAt)
					case !t.ExpiresAt.IsZero() && time.Now().After(t.ExpiresAt):
						state = "expired"
					}
					rows = append(rows, []string{t.ID, t.Role, orDash(t.Tenant), orDash(t.Label), when(t.CreatedAt), when(t.LastUsedAt), when(t.ExpiresAt), state})
				}
				printTable(w, []string{"ID", "ROLE", "TENANT", "LABEL", "CREATED", "LAST USED", "EXPIRES", "STATE"}, rows)
			})
		}},
		{Name: "revoke", Usage: "revoke a token", UsageText: "metalhall token revoke ID", Flags: []cli.Flag{outputFlag()},
			Action: func(c *cli.Context) error {
				id, err := name(c, "token ID")
				if err != nil {
					return err
				}
				out, err := api.Call(c.Context, client(c), api.Ops.TokenRevoke(), api.NoBody{}, id)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) { fmt.Fprintf(w, "token %s revoked\n", out.ID) })
			}},
	}}
}

func auditCommand() *cli.Command {
	return &cli.Command{Name: "audit", Usage: "the audit trail (admin)", Subcommands: []*cli.Command{
		{Name: "list", Usage: "list audit events",
			UsageText: `metalhall audit list [--since 1h|2d|YYYY-MM-DD|RFC3339] [--actor TOKEN_ID|LABEL]
                   [--action ACTION|PREFIX.] [--outcome ok|refused|failed] [--tenant TENANT]
                   [--limit N] [--after SEQ | --before SEQ]

A page of the events that match, in order: the newest --limit (1000) of
them, or those before --before SEQ (paging back), or the oldest --limit
after --after SEQ (paging forward; the next page is --after the last SEQ
printed, and no event is skipped or shown twice while others are written).
A page shorter than --limit is the last; on a terminal, a full one says
where the next starts.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "since", Usage: "events from this long ago (90m, 1h, 2d), this date, or this RFC 3339 time on"},
				&cli.StringFlag{Name: "actor", Usage: "a token's ID or label ('metalhall token list')"},
				&cli.StringFlag{Name: "action", Usage: "an action (machine.provision) or a prefix ending in '.' (machine.)"},
				&cli.StringFlag{Name: "outcome", Usage: "ok, refused or failed"},
				&cli.StringFlag{Name: "tenant", Usage: "only events about this tenant's objects"},
				&cli.IntFlag{Name: "limit", Usage: "events in a page, 1 to 10000 (default 1000)"},
				&cli.StringFlag{Name: "after", Usage: "page forward: events after this SEQ, oldest first"},
				&cli.StringFlag{Name: "before", Usage: "page back: events before this SEQ, newest first"},
				outputFlag(),
			},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				since, err := parseSince(c.String("since"), time.Now())
				if err != nil {
					return err
				}
				switch o := c.String("outcome"); o {
				case "", "ok", "refused", "failed":
				default:
					return usagef("--outcome %q: use ok, refused or failed", o)
				}
				q := auditQuery{since: since, actor: c.String("actor"), action: c.String("action"), outcome: c.String("outcome"),
					tenant: c.String("tenant"), limit: c.Int("limit"), after: c.String("after"), before: c.String("before")}
				if c.IsSet("limit") && (q.limit < 1 || q.limit > 10000) {
					return usagef("--limit %d: give 1 to 10000", q.limit)
				}
				for flag, v := range map[string]string{"after": q.after, "before": q.before} {
					if _, err := strconv.ParseUint(v, 10, 64); v != "" && err != nil {
						return usagef("--%s %q: give the SEQ of an event (the first column, or seq in -o json)", flag, v)
					}
				}
				if q.after != "" && q.before != "" {
					return usagef("audit list: give --after (page forward) or --before (page back), not both")
				}
				out, labels, err := auditEvents(c.Context, client(c), q)
				if err != nil {
					return err
				}
				return show(c, out, func(w io.Writer) {
					rows := [][]string{}
					for _, e := range out {
						actor := e.Actor
						if l := labels[e.Actor]; l != "" {
							actor = l + " (" + e.Actor + ")"
						}
						rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), when(e.Time), actor, orDash(e.Role), orDash(e.Tenant), e.Action, e.Subject, orDash(e.Outcome), orDash(clip(e.Detail, 80))})
					}
					printTable(w, []string{"SEQ", "TIME", "ACTOR", "ROLE", "TENANT", "ACTION", "SUBJECT", "OUTCOME", "DETAIL"}, rows)
					if next := auditNextPage(q, out); next != "" {
						fmt.Fprintln(c.App.ErrWriter, next)
					}
				})
			}},
	}}
}

func completionCommand() *cli.Command {
	return &cli.Command{Name: "completion", Usage: "print a shell completion script",
		UsageText: "metalhall completion bash|zsh|fish\n\nbash: source <(metalhall completion bash)\nzsh:  source <(metalhall completion zsh)\nfish: metalhall completion fish | source\n\nTab then completes commands, flags, and the names of machines, racks, halls,\nsites, images, tenants, subnets and tokens, asked of the service.",
		Action: func(c *cli.Context) error {
			sh, err := name(c, "shell")
			if err != nil {
				return err
			}
			script, ok := completionScripts[sh]
			if !ok {
				return usagef("completion: %q is not supported: use bash, zsh or fish", sh)
			}
			fmt.Fprint(c.App.Writer, script)
			return nil
		}}
}

// completionScripts are urfave/cli's scripts, bound to this program's
// name, changed to always pass the word being completed (see
// completeCommand); fish's is ours, in the same manner.
var completionScripts = map[string]string{
	"bash": `_metalhall_complete() {
  local cur opts
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  # The word being completed is always passed, also when empty: metalhall
  # then knows the word before it (a flag whose value is wanted).
  opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _metalhall_complete metalhall
`,
	"zsh": `#compdef metalhall
_metalhall() {
  local -a opts
  local cur=${words[CURRENT]}
  opts=("${(@f)$(${words[1,CURRENT-1]} "${cur}" --generate-bash-completion 2>/dev/null)}")
  if [[ "${opts[1]}" != "" ]]; then
    compadd -a opts
  else
    _files
  fi
}
# Autoloaded from fpath (vendor-completions/_metalhall) this file is the
# completion function's body; sourced, it registers the function.
if [[ "${funcstack[1]}" == "_metalhall" ]]; then
  _metalhall "$@"
else
  compdef _metalhall metalhall
fi
`,
	"fish": `function __metalhall_complete
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    set -l opts ($words "$cur" --generate-bash-completion 2>/dev/null)
    if test (count $opts) -gt 0
        printf '%s\n' $opts
    else
        __fish_complete_path "$cur"
    end
end
complete -c metalhall -f -a '(__metalhall_complete)'
`,
}
