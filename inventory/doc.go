// Package inventory is metalhall's domain model and its store.
//
// It holds sites, halls, commissioning phases, racks, machines, subnets,
// tenants, tokens, images, jobs and the append-only event log, and it
// enforces the rules that must never be broken whoever calls it: the
// lifecycle state machines, rack placement (units, MACs, power) and phase
// power budgets. Every rule is checked inside the write transaction that
// would break it, so concurrent callers cannot race past a check.
//
// The rules are written once against the kv seam (package kv): Open keeps
// them in one bbolt file, the embedded default; OpenEngine on any kv
// engine, such as an etcd cluster that several instances share. A write
// transaction's function may run more than once (an engine retries a
// conflicting write), so it keeps nothing of a run that did not commit.
// The in-memory views (the boot view, the event feed, the hold) change
// only after a commit: from the write's own change set on bbolt, from the
// engine's change stream on an engine that is a kv.Follower.
//
// No other package opens the database; they all go through Store.
package inventory
