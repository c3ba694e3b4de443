package inventory

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// bConsoleLogs keeps what each job's machine printed on its serial
// console: machine \x00 job id → ConsoleLog. Written at step ends and at
// the job's end, never per line: a log is a few hundred KiB and bbolt
// rewrites the pages of every value it changes.
var bConsoleLogs = []byte("console_logs")

func init() { extraBuckets = append(extraBuckets, bConsoleLogs) }

// MaxConsoleLog is the most of a job's console kept: its last bytes.
const MaxConsoleLog = 256 << 10

// ConsoleLog is the serial console output of one job's machine, captured
// by the service over the BMC while the job ran.
type ConsoleLog struct {
	Machine string  `json:"machine"`
	Job     string  `json:"job"`
	Kind    JobKind `json:"kind"`
	// Tenancy is the job's: a tenant reads only its own tenancy's logs.
	Tenancy string `json:"tenancy,omitempty"`
	// Data is the last MaxConsoleLog bytes captured.
	Data []byte `json:"data"`
	// Captured counts every byte read, including those no longer kept.
	Captured  int64     `json:"captured"`
	Truncated bool      `json:"truncated,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

func consoleLogKey(machine, job string) []byte { return []byte(machine + "\x00" + job) }

// PutConsoleLog stores (or replaces) a job's console log. The job must
// exist; machine, kind and tenancy are taken from it.
func (s *Store) PutConsoleLog(ctx context.Context, l ConsoleLog) error {
	if len(l.Data) > MaxConsoleLog {
		return invalid("console log", "is %d bytes; at most %d are kept", len(l.Data), MaxConsoleLog)
	}
	return s.update(func(tx kv.Tx) error {
		j, err := get[Job](tx, bJobs, "job", l.Job)
		if err != nil {
			return err
		}
		l.Machine, l.Kind, l.Tenancy = j.Machine, j.Kind, j.Tenancy
		if l.UpdatedAt.IsZero() {
			l.UpdatedAt = s.now().UTC()
		}
		return putJSON(bkt(tx, bConsoleLogs), consoleLogKey(l.Machine, l.Job), &l)
	})
}

// ConsoleLog returns the console log of one of a machine's jobs.
func (s *Store) ConsoleLog(ctx context.Context, machine, job string) (*ConsoleLog, error) {
	var out ConsoleLog
	err := s.view(func(tx kv.Tx) error {
		err := getJSON(bkt(tx, bConsoleLogs), consoleLogKey(machine, job), &out)
		if errors.Is(err, ErrNotFound) {
			return &NotFoundError{Kind: "console log of job", Name: job}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ConsoleLogJobs lists the jobs of a machine that have a console log, in
// key (job ID) order, without reading the logs themselves.
func (s *Store) ConsoleLogJobs(ctx context.Context, machine string) ([]string, error) {
	var out []string
	err := s.view(func(tx kv.Tx) error {
		prefix := []byte(machine + "\x00")
		c := bkt(tx, bConsoleLogs).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			out = append(out, string(k[len(prefix):]))
		}
		return nil
	})
	return out, err
}
