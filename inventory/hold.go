package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// keyHold is the hold record in the meta bucket.
var keyHold = []byte("hold")

// Hold stops every BMC call and every job step of the service that opens
// this database, until an admin lifts it. A restore sets it: a restored
// copy started beside the original must not drive the machines the
// original still drives (two controllers on one BMC), so it starts with
// its unfinished jobs paused and the power sync silent.
type Hold struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// BackupTakenAt is when the backup the database came from was taken.
	BackupTakenAt time.Time `json:"backup_taken_at,omitzero"`
}

// HeldError refuses work that would touch a BMC or run a job step while
// the store is on hold.
type HeldError struct{ Hold Hold }

func (e *HeldError) Error() string {
	return fmt.Sprintf("no BMC is contacted and no job runs while this service is on hold (%s, since %s): an admin lifts the hold by resuming the jobs",
		e.Hold.Reason, e.Hold.Since.UTC().Format(time.RFC3339))
}
func (e *HeldError) Unwrap() error { return ErrConflict }

// Hold is the store's hold, nil when there is none. It takes no
// transaction: the engine and the BMC adapter ask it before every call.
func (s *Store) Hold() *Hold { return s.hold.Load() }

// CheckHold returns a HeldError while the store is on hold.
func (s *Store) CheckHold() error {
	if h := s.Hold(); h != nil {
		return &HeldError{Hold: *h}
	}
	return nil
}

// SetHold puts the store on hold. It is meant for an offline database (a
// restore writes it before any service opens the file).
func (s *Store) SetHold(ctx context.Context, h Hold) error {
	if h.Reason == "" {
		return invalid("reason", "a hold needs a reason")
	}
	if h.Since.IsZero() {
		h.Since = s.now().UTC()
	}
	err := s.update(func(tx kv.Tx) error { return putJSON(bkt(tx, bMeta), keyHold, h) })
	if err != nil {
		return fmt.Errorf("setting the hold: %w", err)
	}
	if !s.follows { // else the engine's change stream sets it (applyCommit)
		s.hold.Store(&h)
	}
	return nil
}

// LiftHold ends the hold and returns what it was; a store not on hold is
// a ConflictError and changes nothing.
func (s *Store) LiftHold(ctx context.Context) (*Hold, error) {
	var was Hold
	err := s.update(func(tx kv.Tx) error {
		m := bkt(tx, bMeta)
		if err := getJSON(m, keyHold, &was); err != nil {
			return &ConflictError{Msg: "this service is not on hold: there is nothing to resume"}
		}
		return m.Delete(keyHold)
	})
	if err != nil {
		return nil, err
	}
	if !s.follows {
		s.hold.Store(nil)
	}
	return &was, nil
}

// loadHold reads the hold at Open.
func loadHold(tx kv.Tx) (*Hold, error) {
	data := bkt(tx, bMeta).Get(keyHold)
	if data == nil {
		return nil, nil
	}
	var h Hold
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("hold record is corrupt: %w", err)
	}
	return &h, nil
}
