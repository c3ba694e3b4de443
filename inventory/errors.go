package inventory

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors callers branch on with errors.Is. The typed errors below
// wrap them, so both `errors.Is(err, ErrNotFound)` and errors.As work.
var (
	ErrNotFound   = errors.New("not found")
	ErrExists     = errors.New("already exists")
	ErrInvalid    = errors.New("invalid")
	ErrConflict   = errors.New("conflict")
	ErrInUse      = errors.New("database already in use by another metalhall")
	ErrNewerStore = errors.New("database written by a newer metalhall")
)

// NotFoundError says which record does not exist.
type NotFoundError struct {
	Kind string // "machine", "rack", ...
	Name string
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.Kind, e.Name) }
func (e *NotFoundError) Unwrap() error { return ErrNotFound }

// ExistsError says a record with that name is already there.
type ExistsError struct {
	Kind string
	Name string
}

func (e *ExistsError) Error() string { return fmt.Sprintf("%s %q already exists", e.Kind, e.Name) }
func (e *ExistsError) Unwrap() error { return ErrExists }

// ValidationError is bad input: which field, and what is wrong with it.
type ValidationError struct {
	Field string
	Msg   string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// TransitionError is a state change the state machine does not allow. It
// names the current state and the states that may follow it.
type TransitionError struct {
	Kind    string // "machine", "rack", "phase"
	Name    string
	From    string
	To      string
	Allowed []string
	Reason  string // set when the edge exists but a precondition fails
}

func (e *TransitionError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s %q cannot go from %s to %s: %s", e.Kind, e.Name, e.From, e.To, e.Reason)
	}
	next := "none (it is final)"
	if len(e.Allowed) > 0 {
		next = strings.Join(e.Allowed, ", ")
	}
	return fmt.Sprintf("%s %q is %s and cannot go to %s; allowed next: %s", e.Kind, e.Name, e.From, e.To, next)
}
func (e *TransitionError) Unwrap() error { return ErrConflict }

// PlacementError is a refusal by a physical limit: rack units, a MAC that
// belongs to another machine, a rack or phase power budget.
type PlacementError struct {
	Limit string // "units", "mac", "rack-power", "phase-power", "bmc-address", "ip"
	Msg   string
}

func (e *PlacementError) Error() string { return e.Msg }
func (e *PlacementError) Unwrap() error { return ErrConflict }

// ConflictError is any other refusal because of what is stored (for
// example, deleting a rack that still holds machines).
type ConflictError struct{ Msg string }

func (e *ConflictError) Error() string { return e.Msg }
func (e *ConflictError) Unwrap() error { return ErrConflict }
