package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/metalhall/metalhall/agent/wire"
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
	if strings.ContainsAny(name, "/\\") || name == "" || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("profile %q: not a profile name", name)
	}
	data, err := os.ReadFile(filepath.Join(string(d), name+".yaml"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("profile %q is not defined: add %s.yaml to %s", name, name, string(d))
	}
	if err != nil {
		return nil, err
	}
	var p Profile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("profile %q: %v", name, err)
	}
	p.Name = name
	if p.PowerLimitW < 0 {
		return nil, fmt.Errorf("profile %q: power_limit_w %d: want a number of watts, or 0 for no cap", name, p.PowerLimitW)
	}
	if p.Acceptance != nil {
		if err := p.Acceptance.validate(); err != nil {
			return nil, fmt.Errorf("profile %q: %w", name, err)
		}
	}
	return &p, nil
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
	var inv wire.Inventory
	if err := json.Unmarshal(m.Inspection, &inv); err != nil {
		return failf("no usable inspection to compare with profile %q", p.Name)
	}
	if p.Acceptance != nil {
		return e.accept(ctx, j, m, p, &inv)
	}
	if miss := Mismatches(p, &inv); len(miss) > 0 {
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
