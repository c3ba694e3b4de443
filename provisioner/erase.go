package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// recordErase keeps the erase records a release's agent sent with done,
// and audits each disk. It runs before the job learns the agent is done,
// so a release never ends without its certificate on file.
func (e *Engine) recordErase(ctx context.Context, j *inventory.Job, d *wire.Done) error {
	if j.Kind != inventory.JobRelease || len(d.Erase) == 0 {
		return nil
	}
	rep, err := e.inv.RecordErase(ctx, inventory.EraseReport{Job: j.ID, Disks: d.Erase})
	if err != nil {
		return fmt.Errorf("storing the erase report: %w", err)
	}
	for _, r := range rep.Disks {
		outcome := "ok"
		if r.Result != wire.ErasePassed {
			outcome = "failed"
		}
		ev := inventory.Event{Actor: "provisioner", Subject: "machine/" + j.Machine, Action: "erase.disk", Outcome: outcome,
			Detail: eraseLine(r)}
		if _, err := e.inv.AppendEvent(context.WithoutCancel(ctx), ev); err != nil {
			e.log.Error("recording event", "machine", j.Machine, "err", err)
		}
	}
	return nil
}

// eraseLine is one disk's record in one line, for events and step errors.
func eraseLine(r wire.EraseRecord) string {
	s := fmt.Sprintf("%s (%s, serial %s, %d bytes): %s, %s, NIST 800-88 %s; %s",
		r.Disk, orDash(r.Model), orDash(r.Serial), r.SizeBytes, r.Result, orDash(string(r.Method)), orDash(string(r.Level)), orDash(r.Verification.Summary))
	if r.Error != "" {
		s += "; " + r.Error
	}
	return s
}

// checkErase ends a release's wipe step: the agent's done is not enough,
// every disk it erased must have a passed record on file. A release whose
// erase failed, or came without records, fails the job, and the machine
// does not go back to available.
func (e *Engine) checkErase(ctx context.Context, j *inventory.Job) error {
	rep, err := e.inv.EraseReport(ctx, j.Machine, j.ID)
	if errors.Is(err, inventory.ErrNotFound) {
		return failf("the agent reported the wipe done but sent no erase record: the disks are not certified erased — release the machine again (is its boot environment older than the service?)")
	}
	if err != nil {
		return err
	}
	if rep.Passed() {
		return nil
	}
	var bad []string
	for _, r := range rep.Disks {
		if r.Result != wire.ErasePassed {
			bad = append(bad, fmt.Sprintf("%s: %s", r.Disk, orDash(r.Error)))
		}
	}
	return failf("erase failed on %s", strings.Join(bad, "; "))
}
