package provisioner

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// BurninCheck is the burn-in a profile asks for at commissioning. Each
// part is bounded in time, and the profile chooses how long: the default
// suite keeps commissioning short by leaving it out.
type BurninCheck struct {
	// Seconds is the memory and CPU stress: patterns written and verified
	// over MemoryPercent (default 80) of the memory available, one worker
	// per CPU. 0 leaves it out.
	Seconds       int `yaml:"seconds" json:"seconds,omitempty"`
	MemoryPercent int `yaml:"memory_percent" json:"memory_percent,omitempty"`
	// Disks is the verified write/read test of the non-OS disks.
	Disks *BurninDisks `yaml:"disks" json:"disks,omitempty"`
	// Throughput is the transfer from the service to the agent.
	Throughput *BurninThroughput `yaml:"throughput" json:"throughput,omitempty"`
}

// BurninDisks: MiB per disk, written in regions spread over it, read back
// and compared, within Seconds per disk. It destroys what those regions
// held: it runs at commissioning only, before any tenant data, and leaves
// the OS disk alone unless IncludeOSDisk.
type BurninDisks struct {
	MiB           int  `yaml:"mib" json:"mib"`
	Seconds       int  `yaml:"seconds" json:"seconds,omitempty"` // default 120
	IncludeOSDisk bool `yaml:"include_os_disk" json:"include_os_disk,omitempty"`
}

// BurninThroughput: fetch MiB from the service within Seconds (default
// 120) at no less than MinMBps (10^6 bytes per second).
type BurninThroughput struct {
	MiB     int     `yaml:"mib" json:"mib"`
	MinMBps float64 `yaml:"min_mbps" json:"min_mbps,omitempty"`
	Seconds int     `yaml:"seconds" json:"seconds,omitempty"`
}

const checkBurnin = "burnin"

// Bounds of a burn-in a profile may ask for.
const (
	maxBurninSeconds = 5 * 3600 // the whole suite fits in maxSuiteTime
	defBurninPartSec = 120
)

// validate says what is wrong with a profile's burn-in.
func (b *BurninCheck) validate() []string {
	var bad []string
	if b.Seconds < 0 || b.Seconds > maxBurninSeconds {
		bad = append(bad, fmt.Sprintf("burnin.seconds: %d; 0 (no memory test) to %d", b.Seconds, maxBurninSeconds))
	}
	if b.MemoryPercent < 0 || b.MemoryPercent > 90 {
		bad = append(bad, fmt.Sprintf("burnin.memory_percent: %d; 1 to 90 (the agent needs the rest), 0 for 80", b.MemoryPercent))
	}
	if d := b.Disks; d != nil {
		if d.MiB < 1 || d.MiB > 1<<24 {
			bad = append(bad, fmt.Sprintf("burnin.disks.mib: %d; 1 to %d MiB per disk", d.MiB, 1<<24))
		}
		if d.Seconds < 0 || d.Seconds > maxBurninSeconds {
			bad = append(bad, fmt.Sprintf("burnin.disks.seconds: %d; 0 (%d) to %d", d.Seconds, defBurninPartSec, maxBurninSeconds))
		}
	}
	if t := b.Throughput; t != nil {
		if t.MiB < 1 || int64(t.MiB)<<20 > wire.MaxBurninStreamBytes {
			bad = append(bad, fmt.Sprintf("burnin.throughput.mib: %d; 1 to %d", t.MiB, wire.MaxBurninStreamBytes>>20))
		}
		if t.MinMBps < 0 {
			bad = append(bad, "burnin.throughput.min_mbps must not be negative")
		}
		if t.Seconds < 0 || t.Seconds > 3600 {
			bad = append(bad, fmt.Sprintf("burnin.throughput.seconds: %d; 0 (%d) to 3600", t.Seconds, defBurninPartSec))
		}
	}
	if b.Seconds == 0 && b.Disks == nil && b.Throughput == nil {
		bad = append(bad, "burnin: names no test (seconds, disks or throughput)")
	}
	return bad
}

// task is what the agent is told to run; osDisk is the profile's.
func (b *BurninCheck) task(osDisk string) *wire.BurninTask {
	t := &wire.BurninTask{MemorySeconds: b.Seconds, MemoryPercent: b.MemoryPercent, OSDisk: osDisk}
	if d := b.Disks; d != nil {
		t.DiskMiB, t.DiskSeconds, t.IncludeOSDisk = d.MiB, orDefault(d.Seconds, defBurninPartSec), d.IncludeOSDisk
	}
	if tp := b.Throughput; tp != nil {
		t.ThroughputMiB, t.ThroughputSeconds = tp.MiB, orDefault(tp.Seconds, defBurninPartSec)
	}
	return t
}

// agentTime is the longest the burn-in keeps the agent: the memory test,
// the disks (four at once), the transfer, and a minute for the first
// memory pass and the read-backs that run past the writing bound.
func (b *BurninCheck) agentTime(disks int) time.Duration {
	t := b.task("")
	d := time.Duration(t.MemorySeconds+t.ThroughputSeconds) * time.Second
	if t.DiskMiB > 0 {
		rounds := max(1, (disks+3)/4)
		d += time.Duration(rounds*2*t.DiskSeconds) * time.Second
	}
	return d + time.Minute
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

func burninCheck(bc *BurninCheck, hw *wire.Hardware, needsErase bool) inventory.Check {
	var c inventory.Check
	b := hw.Burnin
	if b == nil {
		c.Result = inventory.CheckNotRun
		c.Summary = "not run: the agent did not report a burn-in (an agent older than the burn-in?)"
		return c
	}
	var parts []string
	if bc.Seconds > 0 {
		m := b.Memory
		switch {
		case m == nil:
			c.Findings = append(c.Findings, inventory.Finding{Subject: "memory test", Problem: "was not run by the agent", Fix: "check the agent's version"})
		case m.Error != "":
			c.Findings = append(c.Findings, inventory.Finding{Subject: "memory test", Problem: "could not run: " + m.Error, Fix: "check the agent's log on the console"})
		default:
			for _, x := range m.Mismatches {
				c.Findings = append(c.Findings, inventory.Finding{Subject: fmt.Sprintf("memory at %#x", x.Address),
					Problem: fmt.Sprintf("read %#016x after %#016x was written (pattern %s)", x.Read, x.Wrote, x.Pattern),
					Fix:     "replace the DIMM the ECC counters name; without them, run the burn-in again and halve the DIMMs"})
			}
			if more := m.MismatchCount - int64(len(m.Mismatches)); more > 0 {
				c.Findings = append(c.Findings, inventory.Finding{Subject: "memory", Problem: fmt.Sprintf("%d more words read back wrong", more), Fix: "as above"})
			}
			parts = append(parts, fmt.Sprintf("memory %d MiB × %d passes on %d CPUs in %.0f s, %d bad words", m.MiBTested, m.Passes, m.Workers, m.Seconds, m.MismatchCount))
		}
	}
	if bc.Disks != nil && needsErase {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "disk test", Problem: "not run: the disks may hold a tenant's data (an image was written since the last erase)",
			Fix: "release the machine (certified erase), then commission it again"})
	} else if bc.Disks != nil {
		tested, skipped := 0, 0
		for _, d := range b.Disks {
			subject := "disk " + d.Disk
			switch {
			case d.Skipped != "":
				skipped++
			case d.Error != "":
				c.Findings = append(c.Findings, inventory.Finding{Subject: subject, Problem: "write/read test failed: " + d.Error, Fix: "replace the drive"})
			case d.MismatchAt >= 0:
				c.Findings = append(c.Findings, inventory.Finding{Subject: subject,
					Problem: fmt.Sprintf("byte %d read back wrong: %s", d.MismatchAt, d.MismatchInfo), Fix: "replace the drive"})
			default:
				tested++
			}
		}
		parts = append(parts, fmt.Sprintf("%d disks verified, %d skipped", tested, skipped))
	}
	if tp := bc.Throughput; tp != nil {
		t := b.Throughput
		switch {
		case t == nil:
			c.Findings = append(c.Findings, inventory.Finding{Subject: "throughput test", Problem: "was not run by the agent", Fix: "check the agent's version"})
		case t.Error != "":
			c.Findings = append(c.Findings, inventory.Finding{Subject: "throughput from the service", Problem: "failed: " + t.Error,
				Fix: "check the provisioning NIC's link, cable and switch port"})
		case t.MBps < tp.MinMBps:
			c.Findings = append(c.Findings, inventory.Finding{Subject: "throughput from the service",
				Problem: fmt.Sprintf("%.0f MB/s, expected at least %.0f MB/s", t.MBps, tp.MinMBps),
				Fix:     "check the provisioning NIC's link speed, cable and switch port"})
		}
		if t != nil && t.Error == "" {
			parts = append(parts, fmt.Sprintf("%.0f MB/s from the service", t.MBps))
		}
	}
	c.Summary = strings.Join(parts, "; ")
	if c.Summary == "" {
		c.Summary = fmt.Sprintf("%d problems", len(c.Findings))
	}
	return c
}

// agentBurninStream serves the burn-in's throughput test: ?bytes=N of the
// pattern, to the agent of an unfinished commissioning only (it is load
// on the provisioning network), at most MaxImageStreams at once.
func (e *Engine) agentBurninStream(w http.ResponseWriter, r *http.Request) {
	j, ok := e.agentJob(w, r)
	if !ok {
		return
	}
	if j.Kind != inventory.JobCommission {
		writeAgent(w, http.StatusForbidden, wire.Error{Error: fmt.Sprintf("job %s is a %s: the burn-in stream is for commissioning", j.ID, j.Kind)})
		return
	}
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 1 || n > wire.MaxBurninStreamBytes {
		writeAgent(w, http.StatusBadRequest, wire.Error{Error: fmt.Sprintf("bytes=%q: give a number of bytes from 1 to %d", r.URL.Query().Get("bytes"), int64(wire.MaxBurninStreamBytes))})
		return
	}
	select {
	case e.burninStreams <- struct{}{}:
		defer func() { <-e.burninStreams }()
	case <-r.Context().Done():
		return
	}
	pat := wire.BurninPattern()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	for sent := int64(0); sent < n; {
		k, err := w.Write(pat[:min(int64(len(pat)), n-sent)])
		if err != nil {
			return // the agent went away or gave up: nothing to tell it
		}
		sent += int64(k)
	}
}
