package api

import (
	"context"
	"encoding/json"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// The request and response bodies of the API. The CLI uses the same types
// through Client, so the two cannot drift apart. JSON names are snake_case
// and stable (CLI.md): add fields, never rename them.

type SiteCreate struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

type HallCreate struct {
	Name string `json:"name"`
	Site string `json:"site"`
}

type PhaseCreate struct {
	Number     int     `json:"number"`
	PowerKW    float64 `json:"power_kw"`
	TargetDate string  `json:"target_date,omitempty"`
}

// StateChange asks for a lifecycle transition.
type StateChange struct {
	To string `json:"to"`
}

type RackCreate struct {
	Name    string  `json:"name"`
	Hall    string  `json:"hall"`
	Phase   int     `json:"phase"`
	Row     string  `json:"row,omitempty"`
	Units   int     `json:"units,omitempty"`
	PowerKW float64 `json:"power_kw,omitempty"`
}

// RackDetail is a rack with what is in it, for `rack show`.
type RackDetail struct {
	inventory.Rack
	Usage    inventory.RackUsage `json:"usage"`
	Machines []Machine           `json:"machines"`
	// Power is rated vs measured vs the rack's budget (BudgetW), for
	// staff; tenants, who see only their own machines, get none.
	Power *inventory.PowerDraw `json:"power,omitempty"`
}

// PhaseView is a phase as `phase list` shows it: its budget, what is
// allocated to racks, and rated vs measured over its machines.
type PhaseView struct {
	inventory.Phase
	AllocatedW int64               `json:"allocated_w"`
	Power      inventory.PowerDraw `json:"power"`
}

type MachineEnroll struct {
	Name        string   `json:"name"`
	Rack        string   `json:"rack"`
	Unit        int      `json:"unit"`
	Height      int      `json:"height,omitempty"`
	MACs        []string `json:"macs"`
	BMCAddress  string   `json:"bmc_address"`
	BMCProtocol string   `json:"bmc_protocol"`
	BMCUser     string   `json:"bmc_user"`
	BMCPassword string   `json:"bmc_password"`
	PowerW      int64    `json:"power_w,omitempty"`
	Profile     string   `json:"profile,omitempty"`
	IP          string   `json:"ip,omitempty"`
	// BMCSystem and BMCAuth are optional, for Redfish BMCs: the
	// ComputerSystem to drive and the auth mode (session or basic).
	BMCSystem string `json:"bmc_system,omitempty"`
	BMCAuth   string `json:"bmc_auth,omitempty"`
	// BMCBootMode is uefi (default) or legacy: the mode boot overrides
	// ask for.
	BMCBootMode string `json:"bmc_boot_mode,omitempty"`
}

// Machine is a machine as the API shows it: the stored record without the
// reference to its sealed BMC secret, and with its last inspection.
type Machine struct {
	inventory.Machine
	// Inspection is the agent's last hardware report as it came. The
	// store keeps it apart from the record; withInspections adds it.
	Inspection json.RawMessage `json:"inspection,omitempty"`
}

// withInspections adds to each machine of out its last inspection, read
// together: only where a machine is shown (show, lists, rack detail, the
// replies to a change), never on the paths that only read its state.
func (s *Server) withInspections(ctx context.Context, out []Machine) error {
	var names []string
	for _, m := range out {
		if !m.InspectedAt.IsZero() {
			names = append(names, m.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	reports, err := s.inv.Inspections(ctx, names)
	if err != nil {
		return err
	}
	for i := range out {
		out[i].Inspection = reports[out[i].Name]
	}
	return nil
}

func machineView(m inventory.Machine) Machine {
	m.BMC.SecretRef = ""
	return Machine{Machine: m}
}

type MaintenanceRequest struct {
	On     bool   `json:"on"`
	Reason string `json:"reason,omitempty"`
}

type SubnetCreate struct {
	Name    string   `json:"name"`
	CIDR    string   `json:"cidr"`
	Gateway string   `json:"gateway"`
	Range   string   `json:"range,omitempty"` // FIRST-LAST
	DNS     []string `json:"dns,omitempty"`
}

type TenantCreate struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// TenantAssign hands a rack (with its machines) or one machine to a tenant.
type TenantAssign struct {
	Rack    string `json:"rack,omitempty"`
	Machine string `json:"machine,omitempty"`
}

type TokenCreate struct {
	Role   string `json:"role"`
	Tenant string `json:"tenant,omitempty"`
	Label  string `json:"label,omitempty"`

	// TTL is how long the token works: a Go duration ("720h") or days
	// ("90d"). Empty: the role's default (DefaultTokenTTL).
	TTL string `json:"ttl,omitempty"`
}

// Token is a token as listed: never its secret or hash.
type Token struct {
	ID         string    `json:"id"`
	Role       string    `json:"role"`
	Tenant     string    `json:"tenant,omitempty"`
	Label      string    `json:"label,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
}

// TokenCreated carries the secret token, shown this once.
type TokenCreated struct {
	Token
	Secret string `json:"token"`
}

func tokenView(t inventory.Token) Token {
	return Token{ID: t.ID, Role: string(t.Role), Tenant: t.Tenant, Label: t.Label,
		CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt, ExpiresAt: t.ExpiresAt}
}

// Error is the body of every error response.
type Error struct {
	Message string `json:"error"`
	Code    string `json:"code"`
}

// Health is the body of /healthz.
type Health struct {
	Status string `json:"status"`
}
