package provisioner

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// AgentToken is the bearer token of a job's agent: the job ID and an HMAC
// of it under the engine's key. Nothing is stored; it is valid while its
// job is unfinished and younger than TokenTTL.
func (e *Engine) AgentToken(jobID string) string {
	return "ag_" + jobID + "_" + e.tokenMAC(jobID)
}

func (e *Engine) tokenMAC(jobID string) string {
	h := hmac.New(sha256.New, e.cfg.TokenKey)
	h.Write([]byte("metalhall agent token\x00" + jobID))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

var errBadToken = errors.New("agent token is not valid (wrong, expired, or its job has ended)")

// jobForToken returns the unfinished job a token belongs to.
func (e *Engine) jobForToken(ctx context.Context, tok string) (*inventory.Job, error) {
	rest, ok := strings.CutPrefix(tok, "ag_")
	if !ok {
		return nil, errBadToken
	}
	// Job IDs have no '_'; the MAC's base64url alphabet may.
	id, mac, ok := strings.Cut(rest, "_")
	if !ok {
		return nil, errBadToken
	}
	if !hmac.Equal([]byte(mac), []byte(e.tokenMAC(id))) {
		return nil, errBadToken
	}
	j, err := e.inv.Job(ctx, id)
	if err != nil || j.State.Finished() || e.cfg.Now().Sub(j.CreatedAt) > e.cfg.TokenTTL {
		return nil, errBadToken
	}
	return j, nil
}

// CheckBootToken tells netboot whether a boot-script request carrying a
// token comes from a machine whose job that token belongs to.
func (e *Engine) CheckBootToken(ctx context.Context, mac net.HardwareAddr, token string) bool {
	j, err := e.jobForToken(ctx, token)
	if err != nil {
		return false
	}
	entry, ok := e.inv.LookupMAC(mac)
	return ok && entry.Machine == j.Machine && (!e.cfg.ScriptAfterDHCP || e.netbooting(j.ID))
}

// AgentHandler serves the agent's endpoints under wire.PathPrefix.
func (e *Engine) AgentHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathPrefix+wire.EndpointTask, e.agentCall(e.agentTask, maxAgentMessage))
	mux.HandleFunc("POST "+wire.PathPrefix+wire.EndpointInspection, e.agentCall(e.agentInspection, maxInspection))
	mux.HandleFunc("POST "+wire.PathPrefix+wire.EndpointProgress, e.agentCall(e.agentProgress, maxAgentMessage))
	mux.HandleFunc("POST "+wire.PathPrefix+wire.EndpointDone, e.agentCall(e.agentDone, maxAgentMessage))
	mux.HandleFunc("GET "+wire.PathPrefix+wire.EndpointBurninStream, e.agentBurninStream)
	return mux
}

// Body limits of the agent's calls. An 8-GPU HGX server's inspection report
// is about 16 KiB, and it is stored on the machine record as it came: 1 MiB
// leaves room for the largest servers and keeps a misbehaving agent from
// bloating the database.
const (
	maxInspection   = 1 << 20
	maxAgentMessage = 64 << 10
)

type agentFunc func(ctx context.Context, j *inventory.Job, body []byte) (any, error)

func (e *Engine) agentCall(fn agentFunc, limit int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		j, ok := e.agentJob(w, r)
		if !ok {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeAgent(w, http.StatusRequestEntityTooLarge, wire.Error{Error: fmt.Sprintf(
					"request body is larger than the %s this call accepts", formatSize(limit))})
				return
			}
			writeAgent(w, http.StatusBadRequest, wire.Error{Error: err.Error()})
			return
		}
		out, err := fn(r.Context(), j, body)
		if err != nil {
			writeAgent(w, http.StatusBadRequest, wire.Error{Error: err.Error()})
			return
		}
		if out == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeAgent(w, http.StatusOK, out)
	}
}

// agentJob is the job whose agent token the request carries, from an
// address that may use it; otherwise it answers 401 or 403 and says no.
func (e *Engine) agentJob(w http.ResponseWriter, r *http.Request) (*inventory.Job, bool) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	j, err := e.jobForToken(r.Context(), tok)
	if err != nil {
		writeAgent(w, http.StatusUnauthorized, wire.Error{Error: err.Error()})
		return nil, false
	}
	if err := e.checkSource(r, j); err != nil {
		writeAgent(w, http.StatusForbidden, wire.Error{Error: err.Error()})
		return nil, false
	}
	return j, true
}

func formatSize(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

func writeAgent(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// agentTask tells the agent what to do, and records that it called home.
// A task the service cannot describe (its image is gone or damaged) fails
// the job at once with that reason, rather than leaving the agent to retry
// until a deadline blames the machine.
func (e *Engine) agentTask(ctx context.Context, j *inventory.Job, _ []byte) (any, error) {
	t := wire.Task{JobID: j.ID, After: wire.AfterPoweroff}
	var taskErr error
	switch j.Kind {
	case inventory.JobCommission:
		t.Kind = wire.KindInspect
		t.Acceptance = e.acceptanceTask(ctx, j.Machine)
	case inventory.JobRelease:
		t.Kind, t.WipeMode = wire.KindWipe, wire.WipeMode(j.WipeMode)
	case inventory.JobProvision:
		var spec *wire.ImageSpec
		if e.cfg.Images == nil {
			taskErr = errors.New("no image source configured")
		} else if spec, taskErr = e.cfg.Images.Spec(ctx, j.Image); taskErr != nil {
			taskErr = fmt.Errorf("the service cannot describe image %q: %w", j.Image, taskErr)
		}
		// The provisioner reboots the machine itself once the disk boot is set.
		t.Kind, t.Image, t.After = wire.KindProvision, spec, wire.AfterNone
		t.TargetDisk = e.osDisk(ctx, j.Machine)
	default:
		taskErr = fmt.Errorf("job %s (%s) has no agent task", j.ID, j.Kind)
	}
	now := e.cfg.Now().UTC()
	if _, err := e.inv.RecordJobUpdate(ctx, j.ID, func(j *inventory.Job) ([]inventory.Event, error) {
		j.AgentSeenAt = now
		if taskErr != nil {
			j.AgentDone, j.AgentOK, j.AgentError = true, false, taskErr.Error()
			return []inventory.Event{jobEvent(j, "agent.task", "refused: "+taskErr.Error())}, nil
		}
		evs := []inventory.Event{jobEvent(j, "agent.task", "the agent called home and fetched its task")}
		return append(evs, endByAgent(j, stepWaitAgent, now)...), nil
	}); err != nil {
		return nil, err
	}
	if taskErr != nil {
		return nil, taskErr
	}
	return t, nil
}

func (e *Engine) agentInspection(ctx context.Context, j *inventory.Job, body []byte) (any, error) {
	var inv wire.Inventory
	if err := json.Unmarshal(body, &inv); err != nil {
		return nil, fmt.Errorf("inspection is not valid JSON: %w", err)
	}
	now := e.cfg.Now().UTC()
	_, _, err := e.inv.RecordJob(ctx, j.ID, func(j *inventory.Job, m *inventory.Machine) ([]inventory.Event, error) {
		m.NewInspection, m.InspectedAt = body, now
		evs := []inventory.Event{jobEvent(j, "agent.inspection", summarize(&inv))}
		if !m.InspectedAt.Before(j.AgentSeenAt) { // what the inspect step waits for
			evs = append(evs, endByAgent(j, stepInspect, now)...)
		}
		if m.Profile != "" && stepIndex(j, stepCheckProfile) >= 0 {
			// Its check-profile step reads the report back: stored, it
			// is these bytes, already decoded here. Given before the
			// commit that wakes the step; a write that does not commit
			// leaves a report no stored bytes match.
			e.handed.give(m.Name, body, &inv)
		}
		return evs, nil
	})
	return nil, err
}

func (e *Engine) agentProgress(ctx context.Context, j *inventory.Job, body []byte) (any, error) {
	var p wire.Progress
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("progress is not valid JSON: %w", err)
	}
	if err := fromThisBoot(j); err != nil {
		return nil, err
	}
	now := e.cfg.Now().UTC()
	// Written behind: a report lost in a crash is said again a few
	// seconds later, and nothing resumes from it. The job's next write
	// (the agent's done, another job's step) usually carries it. A report
	// of an earlier boot's agent (checked above, and again here) is
	// dropped.
	e.inv.UpdateJobBehind(j.ID, func(j *inventory.Job) error {
		if err := fromThisBoot(j); err != nil {
			return err
		}
		j.Progress = inventory.JobProgress{Step: p.Step, Bytes: p.Bytes, Total: p.Total, Rate: p.Rate, At: now}
		return nil
	})
	return nil, nil
}

func (e *Engine) agentDone(ctx context.Context, j *inventory.Job, body []byte) (any, error) {
	var d wire.Done
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("done is not valid JSON: %w", err)
	}
	if err := fromThisBoot(j); err != nil {
		return nil, err
	}
	if err := e.recordErase(ctx, j, &d); err != nil {
		return nil, err
	}
	now := e.cfg.Now().UTC()
	detail := d.Detail
	if !d.OK {
		detail = fmt.Sprintf("%s failed: %s", d.Step, d.Error)
	}
	_, _, err := e.inv.RecordJob(ctx, j.ID, func(j *inventory.Job, m *inventory.Machine) ([]inventory.Event, error) {
		if err := fromThisBoot(j); err != nil {
			return nil, err
		}
		if d.OK {
			if err := doneAccepted(j, m); err != nil {
				return nil, err
			}
		}
		j.AgentDone, j.AgentOK, j.AgentError = true, d.OK, d.Error
		j.Progress.At = now
		evs := []inventory.Event{jobEvent(j, "agent.done", detail)}
		if d.OK { // a failed write fails the step: the worker says so
			evs = append(evs, endByAgent(j, stepWriteImage, now)...)
		}
		return evs, nil
	})
	return nil, err
}

func summarize(inv *wire.Inventory) string {
	gpus := []string{}
	for _, g := range inv.GPUs {
		gpus = append(gpus, fmt.Sprintf("%d × %s", g.Count, g.Model))
	}
	return fmt.Sprintf("%s %s (serial %s): %d × %s, %d GiB RAM, %d disks, %d NICs, GPUs: %s",
		inv.System.Vendor, inv.System.Product, orDash(inv.System.Serial), inv.CPU.Sockets, inv.CPU.Model,
		inv.MemoryBytes>>30, len(inv.Disks), len(inv.NICs), orDash(strings.Join(gpus, ", ")))
}

// osDisk is the disk the machine's profile says images go to, if any.
func (e *Engine) osDisk(ctx context.Context, machine string) string {
	m, err := e.inv.Machine(ctx, machine)
	if err != nil || m.Profile == "" || e.cfg.Profiles == nil {
		return ""
	}
	p, err := e.cfg.Profiles.Profile(ctx, m.Profile)
	if err != nil {
		return ""
	}
	return p.OSDisk
}
