// Package inventory is metalhall's domain model and its embedded store.
//
// It holds sites, halls, commissioning phases, racks, machines, subnets,
// tenants, tokens, images, jobs and the append-only event log in one bbolt
// file, and it enforces the rules that must never be broken whoever calls
// it: the lifecycle state machines, rack placement (units, MACs, power) and
// phase power budgets. Every rule is checked inside the write transaction
// that would break it, so concurrent callers cannot race past a check.
//
// No other package opens the database; they all go through Store.
package inventory
