package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// Profiles are YAML files in the service's profiles directory (one owner:
// a technician may still drop a file there, or keep the directory in
// version control); these routes list, show, check, write and remove
// them through the API, every write checked as a commissioning job would
// read it.
type Profiles interface {
	Profiles(ctx context.Context) ([]provisioner.ProfileEntry, error)
	Profile(ctx context.Context, name string) (*provisioner.Profile, error)
	Source(ctx context.Context, name string) ([]byte, error)
	PutProfile(ctx context.Context, name string, data []byte) (*provisioner.Profile, error)
	RemoveProfile(ctx context.Context, name string) error
}

func (s *Server) profileRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/profiles", action: "profile.list", summary: "List hardware profiles, a broken one with what is wrong", roles: staff, reply: []ProfileSummary{}, handle: s.listProfiles},
		{method: "GET", pattern: "/api/v1/profiles/{name}", action: "profile.show", summary: "One hardware profile: its fields, its YAML and the machines that name it", roles: staff, reply: ProfileDetail{}, handle: s.showProfile},
		{method: "POST", pattern: "/api/v1/profiles/validate", action: "profile.validate", summary: "Check a profile's YAML as commissioning would read it; nothing is stored (name=NAME)", roles: staff, body: "profile", reply: ProfileDetail{}, handle: s.validateProfile},
		{method: "PUT", pattern: "/api/v1/profiles/{name}", action: "profile.import", summary: "Add or replace a hardware profile (YAML), checked first", roles: staff, body: "profile", reply: ProfileDetail{}, handle: s.putProfile},
		{method: "DELETE", pattern: "/api/v1/profiles/{name}", action: "profile.delete", summary: "Remove a hardware profile no machine names", roles: staff, handle: s.deleteProfile},
	}
}

// ProfileSummary is a profile in a list.
type ProfileSummary struct {
	Name       string `json:"name"`
	GPUModel   string `json:"gpu_model,omitempty"`
	GPUCount   int    `json:"gpu_count,omitempty"`
	OSDisk     string `json:"os_disk,omitempty"`
	Acceptance bool   `json:"acceptance"`
	Machines   int    `json:"machines"`        // machines that name it
	Error      string `json:"error,omitempty"` // why it cannot be used
}

// ProfileDetail is one profile: as parsed, as written, and who uses it.
type ProfileDetail struct {
	Profile  provisioner.Profile `json:"profile"`
	YAML     string              `json:"yaml"`
	Machines []string            `json:"machines"`
}

var errNoProfiles = &httpError{http.StatusServiceUnavailable, "unavailable", "this service has no profiles directory"}

// profileUsers maps profile names to the machines that name them.
func (s *Server) profileUsers(ctx context.Context) (map[string][]string, error) {
	ms, err := s.inv.Machines(ctx, inventory.MachineFilter{})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, m := range ms {
		if m.Profile != "" {
			out[m.Profile] = append(out[m.Profile], m.Name)
		}
	}
	return out, nil
}

func (s *Server) listProfiles(c *call) (int, any, error) {
	if s.profiles == nil {
		return 0, nil, errNoProfiles
	}
	ents, err := s.profiles.Profiles(c.ctx())
	if err != nil {
		return 0, nil, err
	}
	users, err := s.profileUsers(c.ctx())
	if err != nil {
		return 0, nil, err
	}
	out := make([]ProfileSummary, 0, len(ents))
	for _, e := range ents {
		ps := ProfileSummary{Name: e.Name, Machines: len(users[e.Name])}
		if e.Err != nil {
			ps.Error = e.Err.Error()
		} else {
			p := e.Profile
			ps.GPUModel, ps.GPUCount, ps.OSDisk, ps.Acceptance = p.GPUModel, p.GPUCount, p.OSDisk, p.Acceptance != nil
		}
		out = append(out, ps)
	}
	return http.StatusOK, out, nil
}

func (s *Server) showProfile(c *call) (int, any, error) {
	if s.profiles == nil {
		return 0, nil, errNoProfiles
	}
	name := c.r.PathValue("name")
	src, err := s.profiles.Source(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	p, err := s.profiles.Profile(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	users, err := s.profileUsers(c.ctx())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, ProfileDetail{Profile: *p, YAML: string(src), Machines: nonNil(users[name])}, nil
}

// readProfile reads a profile upload.
func (c *call) readProfile() ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, c.s.maxBody))
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, badRequest("the profile is empty: send its YAML")
	}
	return data, nil
}

func (s *Server) validateProfile(c *call) (int, any, error) {
	name := c.r.URL.Query().Get("name")
	if name == "" {
		name = "profile"
	}
	c.subject = "profile/" + name
	if err := inventory.CheckSubject(c.subject); err != nil {
		return 0, nil, badRequest("name %q is not a profile name", name)
	}
	data, err := c.readProfile()
	if err != nil {
		return 0, nil, err
	}
	p, err := provisioner.ParseProfile(name, data)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, ProfileDetail{Profile: *p, YAML: string(data), Machines: []string{}}, nil
}

func (s *Server) putProfile(c *call) (int, any, error) {
	if s.profiles == nil {
		return 0, nil, errNoProfiles
	}
	name := c.r.PathValue("name")
	data, err := c.readProfile()
	if err != nil {
		return 0, nil, err
	}
	p, err := s.profiles.PutProfile(c.ctx(), name, data)
	if err != nil {
		return 0, nil, err
	}
	users, err := s.profileUsers(c.ctx())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, ProfileDetail{Profile: *p, YAML: string(data), Machines: nonNil(users[name])}, nil
}

func (s *Server) deleteProfile(c *call) (int, any, error) {
	if s.profiles == nil {
		return 0, nil, errNoProfiles
	}
	name := c.r.PathValue("name")
	users, err := s.profileUsers(c.ctx())
	if err != nil {
		return 0, nil, err
	}
	if ms := users[name]; len(ms) > 0 {
		sort.Strings(ms)
		shown := ms
		more := ""
		if len(ms) > 10 {
			shown, more = ms[:10], fmt.Sprintf(" and %d more", len(ms)-10)
		}
		noun := "machines"
		if len(ms) == 1 {
			noun = "machine"
		}
		return 0, nil, &inventory.ConflictError{Msg: fmt.Sprintf("profile %s is still named by %d %s: %s%s; give them another profile first (metalhall machine update --profile)",
			name, len(ms), noun, strings.Join(shown, ", "), more)}
	}
	return http.StatusNoContent, nil, s.profiles.RemoveProfile(c.ctx(), name)
}

// checkManifestProfiles refuses a manifest naming a profile the service
// does not have, at the first line that names it: otherwise the machine
// fails only after PXE and inspection.
func (s *Server) checkManifestProfiles(ctx context.Context, ms []ManifestMachine) error {
	known := map[string]string{}
	for i, mm := range ms {
		if mm.Profile == "" {
			continue
		}
		problem, seen := known[mm.Profile]
		if !seen {
			var err error
			if problem, err = s.profileProblem(ctx, mm.Profile); err != nil {
				return err
			}
			known[mm.Profile] = problem
		}
		if problem != "" {
			return badRequest("manifest line %d, machine %d %q: %s", mm.line, i+1, mm.Name, problem)
		}
	}
	return nil
}

// checkMachineProfile refuses a machine enrolled or updated with a profile
// the service does not have, with the words rack import uses.
func (s *Server) checkMachineProfile(ctx context.Context, machine, profile string) error {
	if profile == "" {
		return nil
	}
	problem, err := s.profileProblem(ctx, profile)
	if err != nil || problem == "" {
		return err
	}
	return badRequest("machine %q: %s", machine, problem)
}

// profileProblem says why a machine may not name a profile: it is not
// defined, or it does not parse; "" when it may. One wording for every
// way a machine gets a profile (import, enrol, update). A service without
// a profiles directory checks nothing.
func (s *Server) profileProblem(ctx context.Context, name string) (string, error) {
	if s.profiles == nil {
		return "", nil
	}
	_, err := s.profiles.Profile(ctx, name)
	var nf *provisioner.ProfileNotFoundError
	var pe *provisioner.ProfileError
	switch {
	case err == nil:
		return "", nil
	case errors.As(err, &nf):
		return fmt.Sprintf("profile %q is not defined: import it first (metalhall profile import --file FILE %s) or fix the name", name, name), nil
	case errors.As(err, &pe):
		return fmt.Sprintf("%v: fix the profile first (metalhall profile validate FILE)", pe), nil
	}
	return "", err
}
