package inventory

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory/seal"
)

func TestImageVisibleToEveryoneWhenSharedAndToItsTenantWhenPrivate(t *testing.T) {
	shared, private := Image{Name: "ubuntu"}, Image{Name: "bank-os", Tenant: "bank"}
	for _, c := range []struct {
		img    Image
		tenant string
		want   bool
	}{{shared, "bank", true}, {shared, "telco", true}, {private, "bank", true}, {private, "telco", false}, {private, "", false}} {
		if got := c.img.VisibleTo(c.tenant); got != c.want {
			t.Errorf("%s visible to %q = %v, want %v", c.img.Name, c.tenant, got, c.want)
		}
	}
}

// Commissionable follows the state machine: every state it allows
// commissioning from, but maintenance, and nothing else.
func TestCommissionableStatesComeFromTheStateMachine(t *testing.T) {
	want := map[MachineState]bool{MachineEnrolled: true, MachineAvailable: true, MachineFailed: true}
	for _, s := range MachineStates() {
		if got := Commissionable(s); got != want[s] {
			t.Errorf("Commissionable(%s) = %v, want %v", s, got, want[s])
		}
	}
}

// Lower layers say what is wrong in domain words; only the CLI and the API
// name commands and flags (a stale hint is worse than none: one named
// `metalhall job cancel`, which never existed). This reads the string
// literals of the lower packages' sources.
func TestLowerLayersDoNotQuoteCLISyntax(t *testing.T) {
	// A quoted command ('metalhall subnet create') or a flag (--power-kw).
	// netboot is left out: its iPXE scripts carry iPXE's own options.
	cli := regexp.MustCompile(`'metalhall [a-z]|(^|[\s'(])--[a-z][a-z-]+`)
	for _, dir := range []string{".", "../provisioner", "../images", "../images/imagefmt", "../bmc", "../agent"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING && cli.MatchString(lit.Value) {
					t.Errorf("%s: %s quotes CLI syntax", f, lit.Value)
				}
				return true
			})
		}
	}
}

// One credential chooses both where a BMC password is kept and what it is
// bound to: sealed for one machine, it does not open as another's.
func TestBMCCredentialBindsThePasswordToItsMachine(t *testing.T) {
	key := make([]byte, seal.KeySize)
	s, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	a, b := BMCCredential("gpu-a01-01"), BMCCredential("gpu-a01-02")
	sealed, err := a.Seal(s, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if pw, err := (BMC{SecretRef: a.Ref}).Credential().Open(s, sealed); err != nil || string(pw) != "hunter2" {
		t.Fatalf("open as recorded: %q %v", pw, err)
	}
	if _, err := b.Open(s, sealed); err == nil {
		t.Fatal("a password sealed for one machine opened as another's")
	}
}
