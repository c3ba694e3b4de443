package inventory

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Site is a data-centre campus.
type Site struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// Hall is a data hall of a site; it is commissioned phase by phase.
type Hall struct {
	Name      string    `json:"name"`
	Site      string    `json:"site"`
	CreatedAt time.Time `json:"created_at"`
}

// PhaseState is where a commissioning phase of a hall stands.
type PhaseState string

const (
	PhasePlanned       PhaseState = "planned"
	PhaseCommissioning PhaseState = "commissioning"
	PhaseLive          PhaseState = "live"
)

// Phase is one commissioning phase of a hall, with its power budget.
type Phase struct {
	Hall       string     `json:"hall"`
	Number     int        `json:"number"`
	BudgetW    int64      `json:"budget_w"`
	TargetDate string     `json:"target_date,omitempty"` // YYYY-MM-DD
	State      PhaseState `json:"state"`
	CreatedAt  time.Time  `json:"created_at"`
}

// RackState is a rack's place in its lifecycle.
type RackState string

const (
	RackPlanned        RackState = "planned"
	RackInstalled      RackState = "installed"
	RackCommissioning  RackState = "commissioning"
	RackActive         RackState = "active"
	RackMaintenance    RackState = "maintenance"
	RackDecommissioned RackState = "decommissioned"
)

// Rack is a rack in a hall, placed in one commissioning phase.
type Rack struct {
	Name      string    `json:"name"`
	Hall      string    `json:"hall"`
	Phase     int       `json:"phase"`
	Row       string    `json:"row,omitempty"`
	Units     int       `json:"units"`
	BudgetW   int64     `json:"budget_w"`
	State     RackState `json:"state"`
	Tenant    string    `json:"tenant,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	// PowerAlert is set while the rack's measured draw is over the
	// service's alert share of its budget (see CheckRackPowerAlerts).
	PowerAlert bool `json:"power_alert,omitempty"`
}

// MachineState is a machine's place in its lifecycle.
type MachineState string

const (
	MachineEnrolled       MachineState = "enrolled"
	MachineCommissioning  MachineState = "commissioning"
	MachineAvailable      MachineState = "available"
	MachineProvisioning   MachineState = "provisioning"
	MachineDeployed       MachineState = "deployed"
	MachineDeprovisioning MachineState = "deprovisioning"
	MachineMaintenance    MachineState = "maintenance"
	MachineFailed         MachineState = "failed"
	MachineRetired        MachineState = "retired"
)

// BMCProtocol is how the service talks to a machine's BMC.
type BMCProtocol string

const (
	ProtocolIPMI    BMCProtocol = "ipmi"
	ProtocolRedfish BMCProtocol = "redfish"
)

// BMC is a machine's out-of-band controller. The password is never here:
// it lives sealed under SecretRef (see Store.Secret).
type BMC struct {
	Address   string      `json:"address"` // host[:port]
	Protocol  BMCProtocol `json:"protocol"`
	Username  string      `json:"username"`
	SecretRef string      `json:"secret_ref,omitempty"`
	// System is the Redfish ComputerSystem to drive (Id or Name); empty:
	// chosen by the service. Auth is "session", "basic" or empty (a
	// session when the BMC offers one). Both are for Redfish only.
	System string `json:"system,omitempty"`
	Auth   string `json:"auth,omitempty"`
	// BootMode is the firmware's boot mode that boot overrides ask for:
	// "legacy" for BIOS machines, "uefi" or empty for UEFI ones.
	BootMode string `json:"boot_mode,omitempty"`
}

// BMCStatus is what the last contact with the BMC said.
type BMCStatus struct {
	Power     string `json:"power,omitempty"` // on, off, unknown
	Reachable bool   `json:"reachable"`
	// Outcome classifies the last contact: ok, auth, unreachable, timeout,
	// unsupported or protocol.
	Outcome string `json:"outcome,omitempty"`
	// ConsumedW is the machine's measured draw at its last power sync,
	// where the BMC reports one (0: not measured).
	ConsumedW int64 `json:"consumed_w,omitempty"`
	// Sensors is the health the last power sync read, where the BMC
	// reports it.
	Sensors   *SensorSummary `json:"sensors,omitempty"`
	LastError string         `json:"last_error,omitempty"`
	ReadAt    time.Time      `json:"read_at,omitzero"`
}

// SensorSummary is a machine's health as its BMC last reported it: the
// inlet temperature, and how many fans and power supplies report healthy.
type SensorSummary struct {
	InletC   float64 `json:"inlet_c,omitempty"`
	HasInlet bool    `json:"has_inlet,omitempty"`
	Fans     int     `json:"fans"`
	FansOK   int     `json:"fans_ok"`
	PSUs     int     `json:"psus"`
	PSUsOK   int     `json:"psus_ok"`
	// WattsNotOffered: the BMC has no power reading (IPMI without DCMI).
	WattsNotOffered bool `json:"watts_not_offered,omitempty"`
}

// PowerLimitRecord is the power cap a machine's profile asks for, as it
// was last applied to its BMC.
type PowerLimitRecord struct {
	LimitW int64 `json:"limit_w"`
	// State is "applied" (the BMC reads the limit back) or
	// "unsupported" (the BMC offers no power cap).
	State string `json:"state"`
	// Via is the BMC resource that holds it: PowerControl, Control, DCMI.
	Via    string    `json:"via,omitempty"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// Machine is one server.
type Machine struct {
	Name       string       `json:"name"`
	Rack       string       `json:"rack"`
	Unit       int          `json:"unit"`   // lowest U it occupies (1-based)
	Height     int          `json:"height"` // in U
	MACs       []string     `json:"macs"`   // canonical lower-case aa:bb:cc:dd:ee:ff
	BMC        BMC          `json:"bmc"`
	PowerW     int64        `json:"power_w"`
	Profile    string       `json:"profile,omitempty"`
	IP         string       `json:"ip,omitempty"` // address reservation
	Tenant     string       `json:"tenant,omitempty"`
	State      MachineState `json:"state"`
	PrevState  MachineState `json:"prev_state,omitempty"` // state to return to after maintenance
	Reason     string       `json:"reason,omitempty"`
	FailedStep string       `json:"failed_step,omitempty"`
	BMCStatus  BMCStatus    `json:"bmc_status,omitzero"`
	// BMCFirmware is the firmware the BMC listed at the last
	// commissioning.
	BMCFirmware *BMCFirmware `json:"bmc_firmware,omitempty"`
	// InspectedAt is when the agent's last hardware report came. The
	// report itself (several KiB: NICs, disks, GPUs, DIMMs) lives apart
	// from the record, read only by those who ask (Store.Inspection):
	// every write of the machine would otherwise re-encode it, and every
	// read and every instance's change feed decode it.
	InspectedAt time.Time `json:"inspected_at,omitzero"`
	// NewInspection is how a write replaces the stored report (a job's
	// update that also sets InspectedAt): it is stored apart and cleared
	// by the write, never kept in the record, and reads never fill it.
	NewInspection json.RawMessage `json:"-"`
	Image         string          `json:"image,omitempty"` // what it is deployed with
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`

	// Tenancy is the ID of the span of time the machine has been with its
	// tenant (or with nobody): new on every change of tenant.
	Tenancy string `json:"tenancy,omitempty"`
	// NeedsErase is set when an image is written to the machine and
	// cleared by a successful release: a tenant's machine goes to another
	// tenant only without it.
	NeedsErase bool `json:"needs_erase,omitempty"`

	// PowerLimit is its profile's power cap as last applied to its BMC
	// (commissioning and provisioning apply it); nil: none asked for.
	PowerLimit *PowerLimitRecord `json:"power_limit,omitempty"`
	// Cabling is the machine's planned cables (its rack's cable schedule);
	// commissioning checks what its NICs hear over LLDP against it.
	Cabling []PlannedCable `json:"cabling,omitempty"`
}

// Subnet is a provisioning network with an optional dynamic range.
type Subnet struct {
	Name       string    `json:"name"`
	CIDR       string    `json:"cidr"`
	Gateway    string    `json:"gateway"`
	RangeFirst string    `json:"range_first,omitempty"`
	RangeLast  string    `json:"range_last,omitempty"`
	DNS        []string  `json:"dns,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Tenant is a customer; it sees only what is assigned to it.
type Tenant struct {
	Name string `json:"name"`
	// Description is free text for people: the customer's full name, a
	// contact, a contract reference.
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// Event is one entry of the append-only log: machine boot steps, state
// changes, and the audit trail of every API request that changes or was
// refused something.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"` // token ID, "system", "netboot", ...
	Role    string    `json:"role,omitempty"`
	Tenant  string    `json:"tenant,omitempty"`
	Subject string    `json:"subject"` // "machine/gpu-a01-07", "rack/a01", ...
	Action  string    `json:"action"`
	Outcome string    `json:"outcome,omitempty"` // ok, refused, failed
	Detail  string    `json:"detail,omitempty"`

	// Tenancy is, for a machine event, the machine's tenancy when it was
	// written: tenants see only their own tenancy's events.
	Tenancy string `json:"tenancy,omitempty"`
}

// Names are handles people type: letters, digits, '-', '_' and '.', starting
// with a letter or digit, at most 63 characters.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidateName checks a name by the rule every handle follows, for what
// is named outside the store (hardware profiles).
func ValidateName(field, name string) error { return checkName(field, name) }

func checkName(field, name string) error {
	if name == "" {
		return invalid(field, "is required")
	}
	if !nameRE.MatchString(name) {
		return invalid(field, "%q is not a valid name: use letters, digits, '-', '_' or '.', starting with a letter or digit, at most 63 characters", name)
	}
	return nil
}

// ParseMAC returns the canonical form of an Ethernet (EUI-48) address.
func ParseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", invalid("mac", "%q is not an Ethernet MAC address (expected six hex octets, e.g. 52:54:00:12:34:56)", s)
	}
	return hw.String(), nil
}

// macKey is the 6-byte index key of a canonical MAC.
func macKey(canonical string) []byte {
	hw, _ := net.ParseMAC(canonical)
	return []byte(hw)
}

func checkDescription(s string) error {
	if len(s) > maxDescription {
		return invalid("description", "is %d characters long, more than %d", len(s), maxDescription)
	}
	return nil
}

func checkDate(field, s string) error {
	if s == "" {
		return nil
	}
	if _, err := time.Parse("2006-01-02", s); err != nil {
		return invalid(field, "%q is not a date in the form YYYY-MM-DD", s)
	}
	return nil
}

func checkAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, invalid(field, "%q is not an IPv4 address", s)
	}
	return a, nil
}

// checkBMCAddress accepts host or host:port, where host is an IP address or a
// DNS name (Redfish URLs with a scheme are accepted too).
func checkBMCAddress(s string) error {
	if s == "" {
		return invalid("bmc_address", "is required")
	}
	if len(s) > maxBMCAddress {
		return invalid("bmc_address", "is %d characters long, more than the %d a host:port or URL may have", len(s), maxBMCAddress)
	}
	h := s
	if i := strings.Index(h, "://"); i >= 0 {
		if sc := strings.ToLower(h[:i]); sc != "http" && sc != "https" {
			return invalid("bmc_address", "%q has scheme %q: use http://, https:// or none", s, h[:i])
		}
		h = h[i+3:]
	}
	h = strings.TrimSuffix(h, "/")
	if host, port, err := net.SplitHostPort(h); err == nil {
		h = host
		if port == "" {
			return invalid("bmc_address", "%q has an empty port", s)
		}
	}
	if h == "" || strings.ContainsAny(h, " /?#@") {
		return invalid("bmc_address", "%q is not a host or host:port", s)
	}
	return nil
}

// normaliseBMCAddress spells a checked BMC address one way: scheme in
// lower case, no trailing slash.
func normaliseBMCAddress(s string) string {
	s = strings.TrimSuffix(strings.TrimSpace(s), "/")
	if i := strings.Index(s, "://"); i >= 0 {
		s = strings.ToLower(s[:i]) + s[i:]
	}
	return s
}

// Key identifies the BMC whatever the spelling of its address: host (in
// lower case) and port, with the protocol's default port ("http://h:80/",
// "h:80" and "HTTP://h:80" are one BMC). The BMC address index uses it.
func (b BMC) Key() string {
	a := normaliseBMCAddress(b.Address)
	scheme := ""
	if i := strings.Index(a, "://"); i >= 0 {
		scheme, a = a[:i], a[i+3:]
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		host, port = strings.Trim(a, "[]"), ""
	}
	if port == "" {
		switch {
		case b.Protocol == ProtocolIPMI:
			port = "623"
		case scheme == "http":
			port = "80"
		default:
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}

// FormatKW renders watts as kilowatts for people: 44000 -> "44", 10200 -> "10.2".
func FormatKW(w int64) string {
	s := fmt.Sprintf("%.3f", float64(w)/1000)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// Upper bounds on the numbers a caller gives, far above any real site and
// far below where sums over them (a phase's allocation, a rack's draw)
// could overflow int64 and let something past a budget.
const (
	MaxRackUnits          = 64             // units in a rack, so also the highest unit
	MaxRackBudgetW  int64 = 2_000_000      // 2 MW: several times today's densest GPU rack
	MaxPhaseBudgetW int64 = 10_000_000_000 // 10 GW
	maxBMCUser            = 64             // IPMI allows 16, Redfish services about as few
	maxBMCAddress         = 255            // a DNS name (253) and a port, or a URL of one
	maxReason             = 1024           // a maintenance reason: a sentence, not a log
	maxDescription        = 1024           // a site's or tenant's description
)

// KWToW converts a kilowatt figure to whole watts, refusing negatives and
// figures beyond any budget (MaxPhaseBudgetW).
func KWToW(field string, kw float64) (int64, error) {
	if kw < 0 || kw != kw {
		return 0, invalid(field, "must be a positive number of kW")
	}
	if max := float64(MaxPhaseBudgetW) / 1000; kw > max {
		return 0, invalid(field, "%g kW is more than any budget may be (at most %s kW)", kw, FormatKW(MaxPhaseBudgetW))
	}
	return int64(kw*1000 + 0.5), nil
}
