package provisioner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/internal/atomicfile"
	"github.com/metalhall/metalhall/inventory"
)

// Profile is what a machine of a hardware profile must have. Zero fields
// are not checked.
type Profile struct {
	Name         string `yaml:"name" json:"name"`
	GPUModel     string `yaml:"gpu_model" json:"gpu_model,omitempty"` // substring of the inspected model, e.g. "H100 SXM5"
	GPUCount     int    `yaml:"gpu_count" json:"gpu_count,omitempty"`
	IBCount      int    `yaml:"ib_count" json:"ib_count,omitempty"` // InfiniBand/ConnectX HCAs
	MinMemoryGiB int64  `yaml:"min_memory_gib" json:"min_memory_gib,omitempty"`
	CPUSockets   int    `yaml:"cpu_sockets" json:"cpu_sockets,omitempty"`
	MinDisks     int    `yaml:"min_disks" json:"min_disks,omitempty"`
	// OSDisk is the disk images are written to: a kernel name (nvme0n1),
	// a /dev path or a serial. Empty: the agent takes the largest
	// non-removable disk, which on an HGX server is a data NVMe, not the
	// boot one: set it for GPU servers.
	OSDisk string `yaml:"os_disk" json:"os_disk,omitempty"`
	// PowerLimitW caps each machine's draw through its BMC (Redfish power
	// limit, IPMI DCMI), applied at commissioning and provisioning where
	// the BMC offers it. 0: no cap.
	PowerLimitW int `yaml:"power_limit_w" json:"power_limit_w,omitempty"`
	// Acceptance is the suite commissioning runs (accept.go). Absent: the
	// machine is only matched against the fields above, as before.
	Acceptance *Acceptance `yaml:"acceptance" json:"acceptance,omitempty"`
}

// ProfileSource finds profiles by name.
type ProfileSource interface {
	Profile(ctx context.Context, name string) (*Profile, error)
}

// ProfileDir reads profiles from DIR/NAME.yaml (profiles are data: a
// technician adds one by dropping a file).
type ProfileDir string

// Profile reads one profile.
func (d ProfileDir) Profile(ctx context.Context, name string) (*Profile, error) {
	if err := checkProfileName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(d.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &ProfileNotFoundError{Name: name}
	}
	if err != nil {
		return nil, err
	}
	return ParseProfile(name, data)
}

func (d ProfileDir) path(name string) string { return filepath.Join(string(d), name+".yaml") }

// ProfileNotFoundError is a profile name with no profile.
type ProfileNotFoundError struct{ Name string }

func (e *ProfileNotFoundError) Error() string {
	return fmt.Sprintf("profile %q is not defined: there is no %s.yaml among the profiles", e.Name, e.Name)
}

// ProfileError is a profile that cannot be used: what is wrong, and on
// which line of its YAML where that is known.
type ProfileError struct {
	Name string
	Line int // 0: not known
	Msg  string
}

func (e *ProfileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("profile %q line %d: %s", e.Name, e.Line, e.Msg)
	}
	return fmt.Sprintf("profile %q: %s", e.Name, e.Msg)
}

// checkProfileName keeps a profile's name a file name in the directory.
func checkProfileName(name string) error {
	// The store's rule for names keeps a profile's name a plain file name
	// in the directory: no separator, no leading dot.
	if err := inventory.ValidateName("profile", name); err != nil {
		return &ProfileError{Name: name, Msg: err.Error()}
	}
	return nil
}

// ParseProfile reads a profile's YAML strictly (an unknown field is a
// typo, not something to ignore) and checks that it can be used: its
// acceptance suite, and an OS disk for GPU servers — without one the agent
// writes images to the largest disk, which on an HGX server is a data
// NVMe, not the boot disk.
func ParseProfile(name string, data []byte) (*Profile, error) {
	if err := checkProfileName(name); err != nil {
		return nil, err
	}
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "yaml: "), "\n ", "")
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = strings.TrimSpace(yamlLine.ReplaceAllString(msg, ""))
		}
		return nil, &ProfileError{Name: name, Line: line, Msg: msg}
	}
	p.Name = name
	if p.PowerLimitW < 0 {
		return nil, fmt.Errorf("profile %q: power_limit_w %d: want a number of watts, or 0 for no cap", name, p.PowerLimitW)
	}
	if p.Acceptance != nil {
		if err := p.Acceptance.validate(); err != nil {
			return nil, &ProfileError{Name: name, Line: keyLine(data, "acceptance"), Msg: err.Error()}
		}
	}
	if p.GPUCount > 0 && strings.TrimSpace(p.OSDisk) == "" {
		return nil, &ProfileError{Name: name, Line: keyLine(data, "gpu_count"), Msg: fmt.Sprintf(
			"gpu_count is %d but os_disk is not set: on a GPU server the agent would write images to the largest disk, a data NVMe; set os_disk to the boot disk (a kernel name such as nvme0n1, a /dev path or its serial)", p.GPUCount)}
	}
	return &p, nil
}

// yamlLine finds "line N:" in a YAML decoder's message.
var yamlLine = regexp.MustCompile(`line (\d+):\s*`)

// keyLine is the line of a top-level key in a YAML document; 0 if absent.
func keyLine(data []byte, key string) int {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return 0
	}
	doc := root.Content[0]
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == key {
			return doc.Content[i].Line
		}
	}
	return 0
}

// ProfileEntry is one file of the directory: its profile, or why it
// cannot be used.
type ProfileEntry struct {
	Name    string
	Profile *Profile // nil when Err is set
	Err     error
}

// Profiles lists the directory's profiles by name, the broken ones with
// their errors. A directory not made yet holds none.
func (d ProfileDir) Profiles(ctx context.Context) ([]ProfileEntry, error) {
	ents, err := os.ReadDir(string(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	var out []ProfileEntry
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".yaml")
		if !ok || e.IsDir() || checkProfileName(name) != nil {
			continue
		}
		p, err := d.Profile(ctx, name)
		out = append(out, ProfileEntry{Name: name, Profile: p, Err: err})
	}
	return out, nil
}

// Source is a profile's YAML as stored.
func (d ProfileDir) Source(ctx context.Context, name string) ([]byte, error) {
	if err := checkProfileName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(d.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &ProfileNotFoundError{Name: name}
	}
	return data, err
}

// PutProfile checks a profile and writes it as DIR/NAME.yaml, replacing
// the one there atomically: a commissioning job reading it sees the old
// file or the new one, never half of one. Nothing is written when the
// profile does not pass ParseProfile.
func (d ProfileDir) PutProfile(ctx context.Context, name string, data []byte) (*Profile, error) {
	p, err := ParseProfile(name, data)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	if err := atomicfile.WriteFile(d.path(name), data, atomicfile.Options{Perm: 0o644}); err != nil {
		return nil, fmt.Errorf("profile %q: %w", name, err)
	}
	return p, nil
}

// RemoveProfile removes DIR/NAME.yaml. The caller checks that no machine
// names it.
func (d ProfileDir) RemoveProfile(ctx context.Context, name string) error {
	if err := checkProfileName(name); err != nil {
		return err
	}
	err := os.Remove(d.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return &ProfileNotFoundError{Name: name}
	}
	return err
}

// checkProfile compares the machine's inspection with its profile and
// lists every mismatch. A profile with an acceptance suite runs it too,
// and keeps its report on the machine whatever the verdict.
func (e *Engine) checkProfile(ctx context.Context, j *inventory.Job, m *inventory.Machine) error {
	if m.Profile == "" {
		return nil
	}
	if e.cfg.Profiles == nil {
		return failf("machine has profile %q but the service has no profiles configured", m.Profile)
	}
	p, err := e.cfg.Profiles.Profile(ctx, m.Profile)
	if err != nil {
		return failf("%v", err)
	}
	report, _, err := e.inv.Inspection(ctx, m.Name)
	if err != nil {
		return err
	}
	inv, err := e.handed.take(m.Name, report)
	if err != nil {
		return failf("no usable inspection to compare with profile %q", p.Name)
	}
	if p.Acceptance != nil {
		return e.accept(ctx, j, m, p, inv)
	}
	if miss := Mismatches(p, inv); len(miss) > 0 {
		return failf("does not match profile %q: %s", p.Name, strings.Join(miss, "; "))
	}
	return nil
}

// Mismatches lists how an inspected machine differs from a profile.
func Mismatches(p *Profile, inv *wire.Inventory) []string {
	var out []string
	if p.GPUCount > 0 || p.GPUModel != "" {
		found, addrs := 0, []string{}
		for _, g := range inv.GPUs {
			if p.GPUModel == "" || strings.Contains(g.Model, p.GPUModel) {
				found += g.Count
				addrs = append(addrs, g.Addresses...)
			}
		}
		if found != p.GPUCount {
			msg := fmt.Sprintf("expected %d GPUs %s, found %d", p.GPUCount, orDash(p.GPUModel), found)
			if len(addrs) > 0 {
				sort.Strings(addrs)
				msg += " (at " + strings.Join(addrs, ", ") + ")"
			}
			out = append(out, msg)
		}
	}
	if p.IBCount > 0 {
		n := 0
		for _, d := range inv.PCI {
			if d.VendorID == "15b3" && strings.HasPrefix(d.Class, "02") || strings.HasPrefix(d.Class, "0207") {
				n++
			}
		}
		if n < p.IBCount {
			out = append(out, fmt.Sprintf("expected %d InfiniBand/Ethernet HCAs (Mellanox/NVIDIA), found %d", p.IBCount, n))
		}
	}
	if p.MinMemoryGiB > 0 && inv.MemoryBytes < p.MinMemoryGiB<<30 {
		out = append(out, fmt.Sprintf("expected at least %d GiB of memory, found %d GiB", p.MinMemoryGiB, inv.MemoryBytes>>30))
	}
	if p.CPUSockets > 0 && inv.CPU.Sockets != p.CPUSockets {
		out = append(out, fmt.Sprintf("expected %d CPU sockets, found %d", p.CPUSockets, inv.CPU.Sockets))
	}
	if p.MinDisks > 0 && len(inv.Disks) < p.MinDisks {
		out = append(out, fmt.Sprintf("expected at least %d disks, found %d", p.MinDisks, len(inv.Disks)))
	}
	return out
}

// ImageSource describes an image for the agent: where to stream it from
// and how to check it.
type ImageSource interface {
	Spec(ctx context.Context, image string) (*wire.ImageSpec, error)
}
