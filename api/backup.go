package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/metalhall/metalhall/backup"
	"github.com/metalhall/metalhall/inventory"
)

// Backups writes backup archives; *backup.Source is one.
type Backups interface {
	Prepare(ctx context.Context, opts backup.Options) (*backup.Prepared, error)
}

// BackupRequest asks for a backup archive. The passphrase encrypts the
// seal key into it; without one the key is left out.
type BackupRequest struct {
	Passphrase    string `json:"passphrase,omitempty"`
	WithoutImages bool   `json:"without_images,omitempty"`
}

// JobResume answers a resume: the hold that was lifted, and the jobs that
// run again.
type JobResume struct {
	Hold inventory.Hold `json:"hold"`
	Jobs []string       `json:"jobs"`
}

var errNoBackups = &httpError{http.StatusServiceUnavailable, "unavailable", "this service writes no backup archives"}

// backupRoutes: the archive a restore needs, and the resume of a restored
// copy's paused jobs.
func (s *Server) backupRoutes() []route {
	return []route{
		{method: "POST", pattern: "/api/v1/backup", action: "backup.archive", summary: "A backup archive (tar): manifest, database, image blobs unless without_images, the seal key only under the passphrase given",
			roles: admin, body: BackupRequest{}, raw: true, handle: s.backupArchive},
		{method: "POST", pattern: "/api/v1/jobs/resume", action: "job.resume", summary: "Lift the hold of a restored copy: its paused jobs run again and its BMCs may be contacted",
			roles: admin, reply: JobResume{}, handle: s.resumeJobs},
	}
}

func (s *Server) backupArchive(c *call) (int, any, error) {
	var in BackupRequest
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	if s.backups == nil {
		return 0, nil, errNoBackups
	}
	// Everything that can be refused is refused here, before the status.
	p, err := s.backups.Prepare(c.ctx(), backup.Options{Passphrase: []byte(in.Passphrase), WithoutImages: in.WithoutImages})
	if err != nil {
		return 0, nil, err
	}
	defer p.Close()
	m := p.Manifest
	c.detail = fmt.Sprintf("%d members, %d bytes, %d images, blobs included: %t, seal key included: %t",
		len(m.Members)+1, m.Bytes(), len(m.Images), !m.WithoutImages, m.SealKey)
	c.w.Header().Set("Content-Type", "application/x-tar")
	c.w.Header().Set("Content-Disposition", `attachment; filename="metalhall-backup.tar"`)
	c.w.WriteHeader(http.StatusOK)
	if err := p.WriteTo(c.ctx(), c.w); err != nil {
		// The status is sent: the stream is cut short, which the client
		// and any restore refuse.
		s.log.Error("backup archive stream failed", "err", err)
		panic(http.ErrAbortHandler)
	}
	return http.StatusOK, nil, nil
}

func (s *Server) resumeJobs(c *call) (int, any, error) {
	if s.prov == nil {
		return 0, nil, errNoProvisioner
	}
	h, jobs, err := s.prov.Resume(c.ctx(), c.p.TokenID)
	if err != nil {
		return 0, nil, err
	}
	out := JobResume{Hold: *h, Jobs: []string{}}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, j.ID)
	}
	c.detail = fmt.Sprintf("hold lifted (%s); %d job(s) run again", h.Reason, len(out.Jobs))
	return http.StatusOK, out, nil
}

// bmcFailure is a BMC call's error as the API answers it: a BMC that
// failed is a 502; a call refused because the service is on hold is that
// refusal (409, with the command that lifts it).
func bmcFailure(err error) error {
	var held *inventory.HeldError
	if errors.As(err, &held) {
		return err
	}
	return &httpError{http.StatusBadGateway, "bmc_error", err.Error()}
}
