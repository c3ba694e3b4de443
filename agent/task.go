package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
)

// Runner does one task end to end against the service. It holds no
// global state, so tests run it against a fake service, a fixture sysfs
// and files standing in for disks.
type Runner struct {
	Client *Client
	Root   string // where proc/ and sys/ are ("/" in the VM)
	DevDir string // where disk nodes are ("/dev" in the VM)
	Log    *slog.Logger
	// TaskTimeout bounds the wait for the service to hand out a task
	// (default 10 min: a service restarting is not a reason to give up).
	TaskTimeout time.Duration
	// ProgressEvery is the progress interval (default 5 s).
	ProgressEvery time.Duration
	Fetch         FetchOptions
}

// Run fetches the task, inspects, performs it, and reports done. It
// returns what to do afterwards and the task's error, if any (already
// reported to the service when possible).
func (r *Runner) Run(ctx context.Context) (wire.After, error) {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if r.TaskTimeout == 0 {
		r.TaskTimeout = 10 * time.Minute
	}
	if r.ProgressEvery == 0 {
		r.ProgressEvery = 5 * time.Second
	}
	log.Info("asking for a task", "url", r.Client.BaseURL)
	var task wire.Task
	tctx, cancel := context.WithTimeout(ctx, r.TaskTimeout)
	err := retry(tctx, "get task", log.Warn, func(ctx context.Context) (err error) {
		task, err = r.Client.Task(ctx)
		return err
	})
	cancel()
	if err != nil {
		return wire.AfterPoweroff, fmt.Errorf("%s: %w", wire.StepTask, err)
	}
	after := task.After
	if after == "" {
		after = wire.AfterPoweroff
	}
	log.Info("task", "job", task.JobID, "kind", task.Kind, "after", after)

	progress := r.progressPoster(ctx, task.JobID, log)
	step, detail, erased, err := r.perform(ctx, task, progress.post, log)
	done := wire.Done{JobID: task.JobID, OK: err == nil, Step: step, Detail: detail, Erase: erased}
	if err != nil {
		done.Error = err.Error()
		log.Error("task failed", "step", step, "err", err)
	} else {
		log.Info("task done", "detail", detail)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// The service writes progress behind: a restart in the middle loses
	// the last reports, and it believes a "done" only with the bytes
	// written on record. Every try after the first says the last report
	// again before the done.
	tries := 0
	if derr := retry(dctx, "report done", log.Warn, func(ctx context.Context) error {
		if tries++; tries > 1 {
			if p, ok := progress.last(); ok {
				if err := r.Client.Progress(ctx, p); err != nil {
					return err
				}
			}
		}
		return r.Client.Done(ctx, done)
	}); derr != nil {
		log.Error("could not report the result", "err", derr)
		if err == nil {
			err = derr
		}
	}
	return after, err
}

// perform returns the last step reached, a human summary, the erase
// records of a wipe, and the error.
func (r *Runner) perform(ctx context.Context, task wire.Task, progress ProgressFunc, log *slog.Logger) (string, string, []wire.EraseRecord, error) {
	if task.Kind == wire.KindWipe {
		return r.erase(ctx, task, progress, log)
	}
	step, detail, err := r.performOther(ctx, task, progress, log)
	return step, detail, nil, err
}

// inspect sends the inventory: every task starts with it.
func (r *Runner) inspect(ctx context.Context, task wire.Task, log *slog.Logger) (*wire.Inventory, error) {
	if a := task.Acceptance; a != nil && a.LLDPSeconds > 0 && r.Root == "/" {
		bringLinksUp(ctx, "/sys/class/net", linkWait, log)
	}
	inv, err := Inspect(r.Root)
	if err != nil {
		return nil, err
	}
	if a := task.Acceptance; a != nil && a.DCGMLevel > 0 && inv.Hardware != nil {
		log.Info("running GPU diagnostics", "level", a.DCGMLevel)
		inv.Hardware.DCGM = runDCGM(ctx, a.DCGMLevel, time.Duration(a.DCGMTimeoutSeconds)*time.Second)
	}
	if a := task.Acceptance; a != nil && a.LLDPSeconds > 0 && inv.Hardware != nil {
		log.Info("listening for LLDP", "seconds", a.LLDPSeconds)
		inv.Hardware.LLDP = listenLLDP(ctx, inv.NICs, time.Duration(a.LLDPSeconds)*time.Second)
	}
	if a := task.Acceptance; a != nil && a.Burnin != nil && inv.Hardware != nil {
		inv.Hardware.Burnin = r.runBurnin(ctx, a.Burnin, &inv, log)
	}
	inv.JobID = task.JobID
	inv.Collected = time.Now().UTC()
	ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = retry(ictx, "post inspection", log.Warn, func(ctx context.Context) error { return r.Client.Inspection(ctx, inv) })
	cancel()
	if err != nil {
		return nil, err
	}
	log.Info("inspection sent", "cpu", inv.CPU.Model, "memory", inv.MemoryBytes, "disks", len(inv.Disks), "nics", len(inv.NICs), "gpus", gpuSummary(inv.GPUs))
	return &inv, nil
}

// erase inspects, then erases every non-removable disk, one after the
// other, and returns a record for each. A disk that fails does not stop
// the others: the machine is left as clean as it can be, and the error
// names every disk that failed.
func (r *Runner) erase(ctx context.Context, task wire.Task, progress ProgressFunc, log *slog.Logger) (string, string, []wire.EraseRecord, error) {
	inv, err := r.inspect(ctx, task, log)
	if err != nil {
		return wire.StepInspect, "", nil, err
	}
	var recs []wire.EraseRecord
	var failed []string
	for _, d := range inv.Disks {
		if d.Removable {
			continue // USB sticks and virtual media are not ours to erase
		}
		path := filepath.Join(r.DevDir, d.Name)
		log.Info("erasing", "disk", path, "mode", task.WipeMode)
		rec, err := Erase(ctx, EraseOptions{Disk: d, Path: path, Mode: task.WipeMode, Progress: progress, ProgressEvery: r.ProgressEvery, Log: log})
		recs = append(recs, rec)
		if err != nil {
			log.Error("erase failed", "disk", path, "err", err)
			failed = append(failed, fmt.Sprintf("%s: %v", d.Name, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		log.Info("erased", "disk", path, "method", rec.Method, "level", rec.Level, "verification", rec.Verification.Summary)
	}
	if len(recs) == 0 {
		return wire.StepWipe, "", nil, fmt.Errorf("no disk to erase (have %s)", diskNames(inv.Disks))
	}
	if len(failed) > 0 {
		return wire.StepWipe, eraseSummary(recs), recs, fmt.Errorf("erase failed on %d of %d disks: %s", len(failed), len(recs), strings.Join(failed, "; "))
	}
	return wire.StepWipe, eraseSummary(recs), recs, nil
}

// performOther runs the tasks other than wipe.
func (r *Runner) performOther(ctx context.Context, task wire.Task, progress ProgressFunc, log *slog.Logger) (string, string, error) {
	inv, err := r.inspect(ctx, task, log)
	if err != nil {
		return wire.StepInspect, "", err
	}
	switch task.Kind {
	case wire.KindInspect:
		return wire.StepInspect, fmt.Sprintf("%d disks, %d NICs, GPUs: %s", len(inv.Disks), len(inv.NICs), gpuSummary(inv.GPUs)), nil
	case wire.KindProvision:
		if task.Image == nil {
			return wire.StepTask, "", errors.New("provision task without an image")
		}
		disk, err := SelectTarget(inv.Disks, task.TargetDisk)
		if err != nil {
			return wire.StepWrite, "", err
		}
		img := *task.Image
		if img.URL, err = resolveURL(r.Client.BaseURL, img.URL); err != nil {
			return wire.StepWrite, "", err
		}
		target := filepath.Join(r.DevDir, disk.Name)
		log.Info("writing image", "url", img.URL, "format", img.Format, "size", img.UncompressedSize, "target", target)
		fetch := r.Fetch
		fetch.Log = log
		// The image server may be the service itself: send the token
		// only there, never to a third-party mirror.
		if sameHost(img.URL, r.Client.BaseURL) {
			fetch.Header = fetch.Header.Clone()
			if fetch.Header == nil {
				fetch.Header = map[string][]string{}
			}
			fetch.Header.Set("Authorization", "Bearer "+r.Client.Token)
		}
		res, err := WriteImage(ctx, WriteOptions{Image: img, Target: target, Fetch: fetch, Progress: progress, ProgressEvery: r.ProgressEvery, Log: log})
		if err != nil {
			step := wire.StepWrite
			if errors.Is(err, ErrDiskMismatch) {
				step = wire.StepVerify
			}
			return step, "", err
		}
		return wire.StepVerify, fmt.Sprintf("wrote %d bytes to %s (%d skipped as zero, %d resumes) in %s, sha256 %s verified",
			res.Written, disk.Name, res.Skipped, res.Resumes, res.Elapsed.Round(time.Millisecond), res.SHA256), nil
	}
	return wire.StepTask, "", fmt.Errorf("unknown task kind %q", task.Kind)
}

// progressPoster sends progress in the background so a slow service
// never slows the disk; reports that arrive while one is in flight
// replace the pending one. It keeps the newest report, to be said again
// before a done the service did not take.
func (r *Runner) progressPoster(ctx context.Context, job string, log *slog.Logger) *poster {
	p := &poster{ch: make(chan wire.Progress, 1), job: job, log: log}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case rep := <-p.ch:
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if err := r.Client.Progress(pctx, rep); err != nil {
					log.Warn("progress report failed", "err", err)
				}
				cancel()
			}
		}
	}()
	return p
}

type poster struct {
	ch  chan wire.Progress
	job string
	log *slog.Logger

	mu     sync.Mutex
	newest *wire.Progress
}

// post is the ProgressFunc: it never blocks.
func (p *poster) post(rep wire.Progress) {
	rep.JobID = p.job
	p.log.Info("progress", "step", rep.Step, "bytes", rep.Bytes, "total", rep.Total, "rate", rep.Rate)
	p.mu.Lock()
	p.newest = &rep
	p.mu.Unlock()
	select {
	case p.ch <- rep:
	default:
		select { // drop the stale one, keep the newest
		case <-p.ch:
		default:
		}
		select {
		case p.ch <- rep:
		default:
		}
	}
}

// last is the newest report, if there was one.
func (p *poster) last() (wire.Progress, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.newest == nil {
		return wire.Progress{}, false
	}
	return *p.newest, true
}

// SelectTarget picks the disk to write: the one the task names, else the
// largest non-removable disk (ties go to the first by name, so the choice
// is stable across boots).
func SelectTarget(disks []wire.Disk, name string) (wire.Disk, error) {
	if name != "" {
		name = strings.TrimPrefix(name, "/dev/")
		for _, d := range disks {
			if d.Name == name || d.Serial == name {
				return d, nil
			}
		}
		return wire.Disk{}, fmt.Errorf("target disk %q not found (have %s)", name, diskNames(disks))
	}
	c := make([]wire.Disk, 0, len(disks))
	for _, d := range disks {
		if !d.Removable && d.SizeBytes > 0 {
			c = append(c, d)
		}
	}
	if len(c) == 0 {
		return wire.Disk{}, fmt.Errorf("no non-removable disk found (have %s)", diskNames(disks))
	}
	sort.SliceStable(c, func(i, j int) bool {
		if c[i].SizeBytes != c[j].SizeBytes {
			return c[i].SizeBytes > c[j].SizeBytes
		}
		return c[i].Name < c[j].Name
	})
	return c[0], nil
}

func diskNames(disks []wire.Disk) string {
	if len(disks) == 0 {
		return "none"
	}
	var n []string
	for _, d := range disks {
		n = append(n, d.Name)
	}
	return strings.Join(n, ", ")
}

func gpuSummary(g []wire.GPUGroup) string {
	if len(g) == 0 {
		return "none"
	}
	var s []string
	for _, x := range g {
		s = append(s, fmt.Sprintf("%d x %s", x.Count, x.Model))
	}
	return strings.Join(s, ", ")
}

func resolveURL(base, ref string) (string, error) {
	b, err := url.Parse(base + "/")
	if err != nil {
		return "", fmt.Errorf("service url %q: %w", base, err)
	}
	u, err := b.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("image url %q: %w", ref, err)
	}
	return u.String(), nil
}

func sameHost(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && ua.Host == ub.Host
}
