package inventory

import (
	"context"
	"encoding/json"
	"io"
	"time"
)

// Inventory is the store's whole surface. Store implements it on any kv
// engine (bbolt, etcd); the test suite is written against this interface.
type Inventory interface {
	CreateSite(ctx context.Context, s Site) (*Site, error)
	Site(ctx context.Context, name string) (*Site, error)
	Sites(ctx context.Context) ([]Site, error)
	CreateHall(ctx context.Context, h Hall) (*Hall, error)
	Hall(ctx context.Context, name string) (*Hall, error)
	Halls(ctx context.Context, site string) ([]Hall, error)
	CreatePhase(ctx context.Context, p Phase) (*Phase, error)
	Phase(ctx context.Context, hall string, number int) (*Phase, error)
	Phases(ctx context.Context, hall string) ([]Phase, error)
	SetPhaseState(ctx context.Context, hall string, number int, to PhaseState) (*Phase, error)
	HallCapacity(ctx context.Context, hall string) (*HallCapacity, error)

	CreateRack(ctx context.Context, r Rack) (*Rack, error)
	Rack(ctx context.Context, name string) (*Rack, error)
	RackUsage(ctx context.Context, name string) (*RackUsage, error)
	RackPower(ctx context.Context, name string) (*PowerDraw, error)
	RackPowers(ctx context.Context) (map[string]PowerDraw, error)
	CheckRackPowerAlerts(ctx context.Context, share float64) ([]PowerAlertChange, error)
	Racks(ctx context.Context, f RackFilter) ([]Rack, error)
	SetRackState(ctx context.Context, name string, to RackState) (*Rack, error)
	AssignRackTenant(ctx context.Context, name, tenant string) (*Rack, error)
	UnassignRackTenant(ctx context.Context, name, tenant string) (*Rack, error)
	DeleteRack(ctx context.Context, name string) error
	ImportRack(ctx context.Context, in RackImport) (*ImportResult, error)
	SetCablingPlans(ctx context.Context, rack string, plans map[string][]PlannedCable) ([]string, error)

	EnrollMachine(ctx context.Context, e Enrollment) (*Machine, error)
	Machine(ctx context.Context, name string) (*Machine, error)
	MachineByMAC(ctx context.Context, mac string) (*Machine, error)
	MachineByIP(ctx context.Context, ip string) (*Machine, error)
	LookupMAC(mac []byte) (MACEntry, bool)
	BootView() *BootView
	Machines(ctx context.Context, f MachineFilter) ([]Machine, error)
	UpdateMachine(ctx context.Context, name string, fn func(*Machine) error) (*Machine, error)
	SetMachineState(ctx context.Context, name string, to MachineState, reason, step string) (*Machine, error)
	SetMaintenance(ctx context.Context, name string, on bool, reason string) (*Machine, error)
	AssignMachineTenant(ctx context.Context, name, tenant string) (*Machine, error)
	UnassignMachineTenant(ctx context.Context, name, tenant string) (*Machine, error)
	RecordBMCStatus(ctx context.Context, name string, st BMCStatus) error
	RecordInspection(ctx context.Context, name string, report json.RawMessage) (*Machine, error)
	Inspection(ctx context.Context, name string) (json.RawMessage, time.Time, error)
	Inspections(ctx context.Context, names []string) (map[string]json.RawMessage, error)
	DeleteMachine(ctx context.Context, name string) error
	Secret(ctx context.Context, ref string) ([]byte, error)

	CreateSubnet(ctx context.Context, sn Subnet) (*Subnet, error)
	Subnets(ctx context.Context) ([]Subnet, error)
	SubnetFor(ctx context.Context, ip string) (*Subnet, error)
	CreateTenant(ctx context.Context, t Tenant) (*Tenant, error)
	Tenant(ctx context.Context, name string) (*Tenant, error)
	Tenants(ctx context.Context) ([]Tenant, error)

	CreateToken(ctx context.Context, t Token) (*Token, error)
	Authenticate(ctx context.Context, id string, hash []byte) (*Token, error)
	TouchToken(ctx context.Context, id string, at time.Time) error
	Tokens(ctx context.Context) ([]Token, error)
	RevokeToken(ctx context.Context, id string) (*Token, error)

	StartJob(ctx context.Context, j Job, machineTo MachineState) (*Job, error)
	StartJobRecording(ctx context.Context, j Job, machineTo MachineState, queued func(*Job) Event) (*Job, error)
	Job(ctx context.Context, id string) (*Job, error)
	ActiveJob(ctx context.Context, machine string) (*Job, error)
	ActiveJobs(ctx context.Context) ([]Job, error)
	MachineJobs(ctx context.Context, machine string) ([]Job, error)
	UpdateJob(ctx context.Context, id string, fn func(*Job, *Machine) error) (*Job, *Machine, error)
	RecordJob(ctx context.Context, id string, fn func(*Job, *Machine) ([]Event, error)) (*Job, *Machine, error)
	UpdateJobOnly(ctx context.Context, id string, fn func(*Job) error) (*Job, error)
	RecordJobUpdate(ctx context.Context, id string, fn func(*Job) ([]Event, error)) (*Job, error)

	AppendEvent(ctx context.Context, e Event) (Event, error)
	Events(ctx context.Context, f EventFilter) ([]Event, error)
	EventsAfter(ctx context.Context, f EventFilter, scan int) ([]Event, uint64, error)
	EventsCommitted() (<-chan struct{}, uint64)

	Backup(w io.Writer) (int64, error)
	Close() error
}

var _ Inventory = (*Store)(nil)
