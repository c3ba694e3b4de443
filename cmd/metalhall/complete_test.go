package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// complete runs the completion request a shell script sends for a command
// line whose last word is the one being completed, and returns the words
// offered. Completion never fails and never writes to stderr.
func (r cliRunner) complete(words ...string) []string {
	r.t.Helper()
	code, out, errs := r.run(append(words, "--generate-bash-completion")...)
	if code != 0 || errs != "" {
		r.t.Fatalf("completing %q: exit %d, stderr %q", words, code, errs)
	}
	return strings.Fields(out)
}

func TestMachineShowCompletesTheMachinesNames(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	importExampleRack(r)
	var machines []struct{ Name string }
	if err := json.Unmarshal([]byte(r.ok("machine", "list", "-o", "json")), &machines); err != nil || len(machines) != 4 {
		t.Fatalf("machine list: %v %v", machines, err)
	}
	var want []string
	for _, m := range machines {
		want = append(want, m.Name)
	}
	slices.Sort(want)

	for _, words := range [][]string{{"machine", "show", ""}, {"machine", "show", "gpu-a01"}, {"machine", "events", "--follow", ""}} {
		got := r.complete(words...)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%q: offered %q, want the machines %q", words, got, want)
		}
	}
	for words, want := range map[string][]string{
		"machine list --rack ":         {"a01"},
		"phase list --hall ":           {"hall-a"},
		"hall capacity ":               {"hall-a"},
		"rack show ":                   {"a01"},
		"hall create --site ":          {"riyadh-1"},
		"machine show -o ":             {"table", "json"},
		"completion ":                  {"bash", "zsh", "fish"},
		"machine show gpu-a01-01 ":     nil, // it takes one name
		"site create ":                 nil, // a new name
		"rack import --file ":          nil, // a file: the shell completes it
		"tenant assign --tenant bank ": nil,
		"machine provision --image ":   nil, // no images yet
		"machine list --rack a01 --st": {"--state"},
		"site create x -- ":            nil, // names only, and nothing created
	} {
		got := r.complete(strings.Split(words, " ")...)
		if !slices.Equal(got, want) {
			t.Errorf("%q: offered %q, want %q", words, got, want)
		}
	}
	for _, words := range [][]string{{"site", "create", "--"}, {"site", "create", "-"}} {
		if got := r.complete(words...); !slices.Contains(got, "--description") || !slices.Contains(got, "--server") {
			t.Errorf("%q: offered %q, want the command's flags and the global ones", words, got)
		}
	}
	if out := r.ok("site", "list", "-o", "json"); strings.Count(out, `"name"`) != 1 {
		t.Errorf("completing created a site: %s", out)
	}

	// Without a token that may list, or without a service, it offers
	// nothing, says nothing, and exits 0.
	if got := (cliRunner{t, url, "not-a-token"}).complete("machine", "show", ""); len(got) != 0 {
		t.Errorf("with a bad token: offered %q", got)
	}
	if got := (cliRunner{t, "ftp://nowhere", tok}).complete("machine", "show", ""); len(got) != 0 {
		t.Errorf("with a bad server: offered %q", got)
	}
}

// TestShellScriptsCompleteMachineNames sources the scripts that
// `metalhall completion bash|zsh|fish` print into the real shells and
// completes `metalhall machine show gpu-a01-0<TAB>` and `metalhall machine
// list --rack <TAB>` with the built binary against a running service.
// bash and fish run their own completion machinery; zsh's needs a
// terminal, so its builtins compadd and _files are stood in for.
func TestShellScriptsCompleteMachineNames(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	importExampleRack(r)
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "metalhall"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "METALHALL_SERVER="+url, "METALHALL_TOKEN="+tok, "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	shells := map[string]func(script string, line []string) *exec.Cmd{
		"bash": func(script string, line []string) *exec.Cmd {
			return exec.Command("bash", append([]string{"--norc", "--noprofile", "-c",
				`source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _metalhall_complete; printf '%s\n' "${COMPREPLY[@]}"`,
				"bash", script}, line...)...)
		},
		"zsh": func(script string, line []string) *exec.Cmd {
			return exec.Command("zsh", append([]string{"-f", "-c",
				`compdef() { : }; compadd() { [[ $1 == -a ]] && print -l -- ${(P)2} }; _files() { print -- FILES }
source "$1"; shift; words=("$@"); CURRENT=$#; _metalhall`,
				"zsh", script}, line...)...)
		},
		"fish": func(script string, line []string) *exec.Cmd {
			return exec.Command("fish", "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", script, strings.Join(line, " "))
		},
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			if _, err := exec.LookPath(sh); err != nil {
				t.Skipf("%s is not installed (Debian package %s)", sh, sh)
			}
			script := filepath.Join(dir, "metalhall."+sh)
			if err := os.WriteFile(script, []byte(r.ok("completion", sh)), 0o644); err != nil {
				t.Fatal(err)
			}
			complete := func(line ...string) []string {
				t.Helper()
				cmd := shells[sh](script, line)
				cmd.Env = env
				cmd.Dir = dir
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%s completing %q: %v", sh, line, err)
				}
				var got []string
				for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					// fish prints "candidate<TAB>description".
					if w, _, _ := strings.Cut(l, "\t"); w != "" {
						got = append(got, w)
					}
				}
				slices.Sort(got)
				return got
			}
			if got, want := complete("metalhall", "machine", "show", "gpu-a01-0"), []string{"gpu-a01-01", "gpu-a01-02", "gpu-a01-03", "gpu-a01-04"}; !slices.Equal(got, want) {
				t.Errorf("metalhall machine show gpu-a01-0<TAB>: %q, want %q", got, want)
			}
			if got, want := complete("metalhall", "machine", "list", "--rack", ""), []string{"a01"}; !slices.Equal(got, want) {
				t.Errorf("metalhall machine list --rack <TAB>: %q, want %q", got, want)
			}
		})
	}
}
