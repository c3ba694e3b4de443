package api

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/metalhall/metalhall/inventory"
)

// Manifest is a rack and its machines as a technician writes them down when
// racking a row (docs/manifest-example.yaml).
type Manifest struct {
	Rack     ManifestRack      `yaml:"rack" json:"rack"`
	Machines []ManifestMachine `yaml:"machines" json:"machines"`
}

type ManifestRack struct {
	Name    string  `yaml:"name" json:"name"`
	Hall    string  `yaml:"hall" json:"hall"`
	Phase   int     `yaml:"phase" json:"phase"`
	Row     string  `yaml:"row" json:"row,omitempty"`
	Units   int     `yaml:"units" json:"units,omitempty"`
	PowerKW float64 `yaml:"power_kw" json:"power_kw"`
}

type ManifestMachine struct {
	Name    string      `yaml:"name" json:"name"`
	Unit    int         `yaml:"unit" json:"unit"`
	Height  int         `yaml:"height" json:"height,omitempty"`
	MACs    []string    `yaml:"macs" json:"macs"`
	BMC     ManifestBMC `yaml:"bmc" json:"bmc"`
	PowerW  int64       `yaml:"power_w" json:"power_w"`
	Profile string      `yaml:"profile" json:"profile,omitempty"`
	IP      string      `yaml:"ip" json:"ip,omitempty"`
	// Cabling is the machine's cable schedule (YAML manifests only).
	Cabling []inventory.PlannedCable `yaml:"cabling" json:"cabling,omitempty"`

	line       int   // where the entry starts in the file, for error messages
	cableLines []int // where each of Cabling starts
}

type ManifestBMC struct {
	Address  string `yaml:"address" json:"address"`
	Protocol string `yaml:"protocol" json:"protocol"`
	User     string `yaml:"user" json:"user"`
	Password string `yaml:"password" json:"password"`
	// System (Redfish ComputerSystem Id or Name) and Auth (session or
	// basic) are optional, for Redfish BMCs only.
	System string `yaml:"system,omitempty" json:"system,omitempty"`
	Auth   string `yaml:"auth,omitempty" json:"auth,omitempty"`
	// BootMode is uefi (default) or legacy, for BIOS machines.
	BootMode string `yaml:"boot_mode,omitempty" json:"boot_mode,omitempty"`
}

// ParseManifest reads a YAML or CSV manifest. Every problem it finds names
// the line and the field.
func ParseManifest(data []byte, format string) (*Manifest, error) {
	switch format {
	case "yaml", "yml":
		return parseYAMLManifest(data)
	case "csv":
		return parseCSVManifest(data)
	}
	return nil, badRequest("manifest format %q is not supported: use yaml or csv", format)
}

func parseYAMLManifest(data []byte) (*Manifest, error) {
	// Anchors and aliases are refused before anything is decoded: a small
	// manifest aliasing one machine thousands of times would otherwise be
	// expanded, and each copy's password sealed. A rack manifest has no
	// use for them.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err == nil {
		if n := firstAlias(&root); n != nil {
			return nil, badRequest("manifest line %d: YAML anchors and aliases (&name, *name) are not accepted: write each machine out in full", n.Line)
		}
	}
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, badRequest("manifest is empty")
		}
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = goTypeName.ReplaceAllString(msg, "")
		return nil, badRequest("manifest: %s", strings.ReplaceAll(msg, "\n ", ""))
	}
	// The node tree says where each machine starts.
	if len(root.Content) > 0 {
		doc := root.Content[0]
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if doc.Content[i].Value == "machines" {
				for j, n := range doc.Content[i+1].Content {
					if j < len(m.Machines) {
						m.Machines[j].line = n.Line
						m.Machines[j].cableLines = cableLines(n)
					}
				}
			}
		}
	}
	return &m, nil
}

// firstAlias returns the first node that defines or uses an anchor.
func firstAlias(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return n
	}
	for _, c := range n.Content {
		if a := firstAlias(c); a != nil {
			return a
		}
	}
	return nil
}

// goTypeName is how yaml.v3 names our Go types in its errors; people
// need the line and the field, not the type.
var goTypeName = regexp.MustCompile(` in type [\w.]+`)

// csvColumns are the CSV manifest's columns: one row per machine, the rack
// columns repeated on every row.
var csvColumns = []string{"rack", "hall", "phase", "row", "units", "rack_power_kw",
	"name", "unit", "height", "macs", "bmc_address", "bmc_protocol", "bmc_user", "bmc_password", "power_w", "profile", "ip"}

// csvOptionalColumns may be left out of a CSV manifest.
var csvOptionalColumns = []string{"bmc_system", "bmc_auth", "bmc_boot_mode"}

func parseCSVManifest(data []byte) (*Manifest, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	rows, err := r.ReadAll()
	if err != nil {
		return nil, badRequest("manifest: %v", err)
	}
	if len(rows) < 2 {
		return nil, badRequest("manifest: expected a header line and at least one machine")
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	for _, c := range csvColumns {
		if _, ok := col[c]; !ok {
			return nil, badRequest("manifest line 1: missing column %q (columns: %s)", c, strings.Join(csvColumns, ","))
		}
	}
	for h := range col {
		if !slices.Contains(csvColumns, h) && !slices.Contains(csvOptionalColumns, h) {
			return nil, badRequest("manifest line 1: unknown column %q", h)
		}
	}
	var m Manifest
	for i, row := range rows[1:] {
		line := i + 2
		get := func(c string) string {
			if i, ok := col[c]; ok && i < len(row) {
				return strings.TrimSpace(row[col[c]])
			}
			return ""
		}
		num := func(c string) (int64, error) {
			v := get(c)
			if v == "" {
				return 0, nil
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, badRequest("manifest line %d, column %s: %q is not a whole number", line, c, v)
			}
			return n, nil
		}
		phase, err := num("phase")
		if err != nil {
			return nil, err
		}
		units, err := num("units")
		if err != nil {
			return nil, err
		}
		kw, err := strconv.ParseFloat(get("rack_power_kw"), 64)
		if err != nil && get("rack_power_kw") != "" {
			return nil, badRequest("manifest line %d, column rack_power_kw: %q is not a number", line, get("rack_power_kw"))
		}
		rack := ManifestRack{Name: get("rack"), Hall: get("hall"), Phase: int(phase), Row: get("row"), Units: int(units), PowerKW: kw}
		if i == 0 {
			m.Rack = rack
		} else if rack != m.Rack {
			return nil, badRequest("manifest line %d: rack columns differ from line 2; a manifest describes one rack", line)
		}
		unit, err := num("unit")
		if err != nil {
			return nil, err
		}
		height, err := num("height")
		if err != nil {
			return nil, err
		}
		power, err := num("power_w")
		if err != nil {
			return nil, err
		}
		var macs []string // nil when the row has none
		macs = append(macs, strings.FieldsFunc(get("macs"), func(r rune) bool { return r == ';' || r == ' ' || r == '|' })...)
		m.Machines = append(m.Machines, ManifestMachine{Name: get("name"), Unit: int(unit), Height: int(height), MACs: macs,
			BMC: ManifestBMC{Address: get("bmc_address"), Protocol: get("bmc_protocol"), User: get("bmc_user"), Password: get("bmc_password"),
				System: get("bmc_system"), Auth: get("bmc_auth"), BootMode: get("bmc_boot_mode")},
			PowerW: power, Profile: get("profile"), IP: get("ip"), line: line})
	}
	return &m, nil
}

// importRack validates a whole manifest, seals its passwords and hands it
// to the store, which applies it in one transaction.
func (s *Server) importRack(c *call) (int, any, error) {
	format := c.r.URL.Query().Get("format")
	if format == "" {
		ct, _, _ := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
		switch ct {
		case "text/csv":
			format = "csv"
		case "application/yaml", "application/x-yaml", "text/yaml":
			format = "yaml"
		default:
			return 0, nil, &httpError{http.StatusUnsupportedMediaType, "unsupported_media_type",
				fmt.Sprintf("content type %q is not a manifest: send application/yaml or text/csv", ct)}
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, c.s.maxBody))
	if err != nil {
		return 0, nil, err
	}
	m, err := ParseManifest(data, format)
	if err != nil {
		return 0, nil, err
	}
	c.subject = "rack/" + m.Rack.Name
	kw, err := inventory.KWToW("rack.power_kw", m.Rack.PowerKW)
	if err != nil {
		return 0, nil, err
	}
	in := inventory.RackImport{Rack: inventory.Rack{Name: m.Rack.Name, Hall: m.Rack.Hall, Phase: m.Rack.Phase, Row: m.Rack.Row, Units: m.Rack.Units, BudgetW: kw}}
	if err := inventory.ValidateRack(&in.Rack); err != nil {
		return 0, nil, fmt.Errorf("manifest rack: %w", err)
	}
	if len(m.Machines) == 0 {
		return 0, nil, badRequest("manifest lists no machines")
	}
	if len(m.Machines) > inventory.MaxRackUnits {
		return 0, nil, badRequest("manifest lists %d machines; a rack holds at most %d (one per unit)", len(m.Machines), inventory.MaxRackUnits)
	}
	if err := s.checkManifestProfiles(c.ctx(), m.Machines); err != nil {
		return 0, nil, err
	}
	for i, mm := range m.Machines {
		e, err := s.enrollment(MachineEnroll{Name: mm.Name, Rack: m.Rack.Name, Unit: mm.Unit, Height: mm.Height, MACs: mm.MACs,
			BMCAddress: mm.BMC.Address, BMCProtocol: mm.BMC.Protocol, BMCUser: mm.BMC.User, BMCPassword: mm.BMC.Password,
			BMCSystem: mm.BMC.System, BMCAuth: mm.BMC.Auth, BMCBootMode: mm.BMC.BootMode,
			PowerW: mm.PowerW, Profile: mm.Profile, IP: mm.IP})
		if err == nil {
			e.Machine.Cabling = mm.Cabling
			err = inventory.ValidateCabling(e.Machine.Cabling)
		}
		if err != nil {
			return 0, nil, fmt.Errorf("manifest line %d, machine %d %q: %w", mm.cableLine(err), i+1, mm.Name, err)
		}
		in.Machines = append(in.Machines, e)
	}
	res, err := s.inv.ImportRack(c.ctx(), in)
	var entry *inventory.EntryError
	if errors.As(err, &entry) {
		mm := m.Machines[entry.Index]
		return 0, nil, fmt.Errorf("manifest line %d, machine %d %q: %w", mm.cableLine(entry.Err), entry.Index+1, mm.Name, entry.Err)
	}
	if err != nil {
		return 0, nil, err
	}
	c.detail = fmt.Sprintf("%d created, %d unchanged", len(res.Created), len(res.Unchanged))
	return http.StatusOK, res, nil
}
