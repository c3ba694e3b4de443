package provisioner

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/metalhall/metalhall/inventory"
)

// MetadataHandler serves the installed OS its metadata, NoCloud/EC2 style,
// under /metadata/: instance-id, hostname, local-ipv4, public-keys,
// user-data. A machine is known by its source address (its reservation)
// and sees only its own data. The first fetch after a provision tells the
// engine the machine booted from its disk.
func (e *Engine) MetadataHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, "no source address", http.StatusBadRequest)
			return
		}
		m, err := e.inv.MachineByIP(r.Context(), host)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		// Only the current tenancy's current deployment: never another
		// tenancy's, never after a release or during a wipe.
		keys, userData := []string(nil), ""
		if j := e.deployment(r.Context(), m); j != nil {
			var err error
			if keys, userData, err = OpenSecrets(e.cfg.Sealer, j); err != nil {
				e.log.Error("metadata", "machine", m.Name, "err", err)
				http.Error(w, "metadata unavailable", http.StatusInternalServerError)
				return
			}
			if !j.State.Finished() {
				e.metadataSeen(r.Context(), j)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch strings.TrimPrefix(r.URL.Path, "/metadata/") {
		case "", "meta-data":
			fmt.Fprintf(w, "instance-id: %s\nlocal-hostname: %s\nlocal-ipv4: %s\n", m.Name, m.Name, m.IP)
			if len(keys) > 0 {
				fmt.Fprintln(w, "public-keys:")
				for _, k := range keys {
					fmt.Fprintf(w, "  - %q\n", k)
				}
			}
		case "instance-id", "hostname":
			fmt.Fprintln(w, m.Name)
		case "local-ipv4":
			fmt.Fprintln(w, m.IP)
		case "public-keys":
			fmt.Fprint(w, strings.Join(keys, "\n"))
		case "user-data":
			fmt.Fprint(w, userData)
		default:
			http.NotFound(w, r)
		}
	})
}

func (e *Engine) metadataSeen(ctx context.Context, j *inventory.Job) {
	// The written OS may ask before the engine has moved on to waiting for
	// it; any fetch after the agent reported a good write counts. One
	// before that comes from the old OS and does not.
	if !j.AgentDone || !j.AgentOK || !j.MetadataSeenAt.IsZero() {
		return
	}
	now := e.cfg.Now().UTC()
	seen := func(j *inventory.Job) []inventory.Event {
		j.MetadataSeenAt = now
		return []inventory.Event{jobEvent(j, "metadata.fetched", "the installed OS fetched its metadata")}
	}
	// The fetch is what the job's last step waits for. When the job is
	// there, the same write ends the step and the job, as the worker
	// would at once after it; the worker then finds the job ended.
	_, _, err := e.inv.RecordJob(ctx, j.ID, func(j *inventory.Job, m *inventory.Machine) ([]inventory.Event, error) {
		evs := seen(j)
		if i := len(j.Steps) - 1; j.CurrentStep() == i && j.Steps[i].Name == stepWaitMetadata &&
			j.Steps[i].State == inventory.StepRunning && !j.CancelRequested {
			evs = append(evs, endJob(j, m, inventory.JobSucceeded, "", "", i, now)...)
		}
		return evs, nil
	})
	if err != nil && !j.State.Finished() {
		// The job's end was refused (its machine's state may not follow):
		// the fetch is still recorded, and the worker ends the job.
		e.inv.RecordJobUpdate(ctx, j.ID, func(j *inventory.Job) ([]inventory.Event, error) { return seen(j), nil })
	}
}
