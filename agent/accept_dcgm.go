package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
)

// dcgmDeadline is the task's bound on the diagnostic, or the level's
// default.
func dcgmDeadline(level int, timeout time.Duration) time.Duration {
	if timeout > 0 {
		return timeout
	}
	return wire.DCGMDefaultTimeout(level)
}

// runDCGM runs NVIDIA's diagnostic when the boot environment has it.
// Without dcgmi, or when it produced nothing readable, the result says
// why it did not run: a diagnostic that did not run is never a pass.
func runDCGM(ctx context.Context, level int, timeout time.Duration) *wire.DCGMResult {
	path, err := exec.LookPath("dcgmi")
	if err != nil {
		return &wire.DCGMResult{Level: level, Reason: "no DCGM in the boot environment"}
	}
	deadline := dcgmDeadline(level, timeout)
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	startHostEngine(ctx)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "diag", "-r", strconv.Itoa(level), "-j")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return &wire.DCGMResult{Level: level, Reason: fmt.Sprintf("dcgmi diag -r %d did not finish within %v", level, deadline)}
	}
	// dcgmi exits non-zero when a test fails: its JSON still says which.
	res, err := parseDCGMDiag(stdout.Bytes(), level)
	if err != nil {
		why := err.Error()
		// DCGM's own words on why it could not run beat the exit status.
		if runErr != nil && !errors.Is(err, errDCGMCouldNotRun) {
			why = fmt.Sprintf("dcgmi diag -r %d: %v: %s", level, runErr, firstLine(stderr.String()+stdout.String()))
		}
		return &wire.DCGMResult{Level: level, Reason: why}
	}
	return res
}

// startHostEngine starts DCGM's host engine when the boot environment has
// one: dcgmi diag talks to it, and nothing else in the initramfs starts
// daemons. It daemonizes itself; if it could not start, dcgmi's own
// runtime_error says so in the report, so its outcome is not judged here.
func startHostEngine(ctx context.Context) {
	path, err := exec.LookPath("nv-hostengine")
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	exec.CommandContext(ctx, path).Run()
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if l, _, ok := strings.Cut(s, "\n"); ok {
		return l
	}
	return s
}

// dcgmBody is what `dcgmi diag -j` prints under its top-level key, in
// both shapes DCGM has used:
//
//   - 2.x and 3.x: {"DCGM GPU Diagnostic": {"test_categories": [{"category",
//     "tests": [{"name", "results": [{"gpu_ids" (or "gpu_id"), "status",
//     "warnings", "info"}]}]}], "version"}}. Tests can be null; warnings
//     are strings or objects with a "warning" field; info a string or a list.
//   - 4.x: {"DCGM Diagnostic": {"test_categories": [{"category", "tests":
//     [{"name", "results": [{"entity_group" ("GPU", "CPU"...),
//     "entity_group_id", "entity_id", "status", "warnings": [{"warning",
//     "error_id", "error_category", "error_severity"}], "info": [...]}],
//     "test_summary": {"status", "warnings", "info"}}]}], "runtime_error"},
//     "entity_groups": [...], "metadata": {"version", "Driver Version
//     Detected"}}. Results are per entity; a test's errors that belong to
//     no entity are only in its test_summary; entities that did not run the
//     test have no result.
//
// Either can carry "runtime_error" instead of results: the diagnostic
// could not run (no host engine, GPUs busy).
type dcgmBody struct {
	Categories []struct {
		Category string      `json:"category"`
		Tests    []*dcgmTest `json:"tests"`
	} `json:"test_categories"`
	Version      string `json:"version"`
	RuntimeError string `json:"runtime_error"`
}

type dcgmTest struct {
	Name    string       `json:"name"`
	Results []dcgmResult `json:"results"`
	Summary *dcgmResult  `json:"test_summary"`
}

type dcgmResult struct {
	GPUIDs      json.RawMessage   `json:"gpu_ids"`
	GPUID       json.RawMessage   `json:"gpu_id"`
	EntityGroup string            `json:"entity_group"`
	EntityID    *int              `json:"entity_id"`
	Status      string            `json:"status"`
	Warnings    []json.RawMessage `json:"warnings"`
	Info        json.RawMessage   `json:"info"`
}

type dcgmDoc struct {
	V3       *dcgmBody `json:"DCGM GPU Diagnostic"`
	V4       *dcgmBody `json:"DCGM Diagnostic"`
	Metadata struct {
		Version string `json:"version"`
	} `json:"metadata"`
}

var (
	errNoDCGMResults   = errors.New("dcgmi diag gave no test results")
	errDCGMCouldNotRun = errors.New("dcgmi diag could not run")
)

// parseDCGMDiag reads dcgmi's JSON in either shape. Text before the
// document (dcgmi prints warnings there) is skipped.
func parseDCGMDiag(out []byte, level int) (*wire.DCGMResult, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return nil, errNoDCGMResults
	}
	var doc dcgmDoc
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(&doc); err != nil {
		return nil, fmt.Errorf("dcgmi diag output: %w", err)
	}
	body := doc.V4
	if body == nil {
		body = doc.V3
	}
	if body == nil {
		return nil, errNoDCGMResults
	}
	if e := strings.TrimSpace(body.RuntimeError); e != "" {
		return nil, fmt.Errorf("%w: %s", errDCGMCouldNotRun, e)
	}
	res := &wire.DCGMResult{Ran: true, Level: level, Version: body.Version}
	if doc.Metadata.Version != "" {
		res.Version = doc.Metadata.Version
	}
	for _, c := range body.Categories {
		for _, t := range c.Tests {
			if t == nil {
				continue
			}
			failed := false
			for _, r := range t.Results {
				dt := dcgmEntity(r)
				dt.Category, dt.Name, dt.Result, dt.Info = c.Category, t.Name, dcgmStatus(r.Status), dcgmText(r.Warnings, r.Info)
				failed = failed || dt.Result == "Fail"
				res.Tests = append(res.Tests, dt)
			}
			// DCGM 4.x puts a test's errors that belong to no entity (an
			// MPI or plugin error) only in its summary: keep the summary
			// when it is the only place that says why the test failed,
			// or when the test has no per-entity results at all.
			if s := t.Summary; s != nil && (len(t.Results) == 0 || (dcgmStatus(s.Status) == "Fail" && !failed)) {
				res.Tests = append(res.Tests, wire.DCGMTest{Category: c.Category, Name: t.Name, GPU: -1,
					Result: dcgmStatus(s.Status), Info: dcgmText(s.Warnings, s.Info)})
			}
		}
	}
	if len(res.Tests) == 0 {
		return nil, errNoDCGMResults
	}
	return res, nil
}

// dcgmEntity says what a result is about: a GPU by its index (3.x
// gpu_ids, 4.x entity_group "GPU"), another entity by name (4.x CPUs,
// NVSwitches), or nothing in particular (GPU -1).
func dcgmEntity(r dcgmResult) wire.DCGMTest {
	if r.EntityID != nil {
		if r.EntityGroup == "" || strings.EqualFold(r.EntityGroup, "GPU") {
			return wire.DCGMTest{GPU: *r.EntityID}
		}
		return wire.DCGMTest{GPU: -1, Entity: fmt.Sprintf("%s %d", r.EntityGroup, *r.EntityID)}
	}
	ids := r.GPUIDs
	if len(ids) == 0 {
		ids = r.GPUID
	}
	return wire.DCGMTest{GPU: dcgmGPU(ids)}
}

// dcgmGPU is the GPU a result is about; -1 when it covers several (the
// deployment tests report "0,1,2,...").
func dcgmGPU(raw json.RawMessage) int {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var n int
		if json.Unmarshal(raw, &n) == nil {
			return n
		}
		return -1
	}
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
		return n
	}
	return -1
}

// dcgmStatus normalises PASS/Pass/pass, FAIL, WARN, SKIPPED to Pass, Fail,
// Warn, Skip; anything else is kept as DCGM wrote it.
func dcgmStatus(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "pass", "passed":
		return "Pass"
	case "fail", "failed":
		return "Fail"
	case "warn", "warning":
		return "Warn"
	case "skip", "skipped":
		return "Skip"
	}
	return s
}

// dcgmText joins DCGM's warnings and info into one line.
func dcgmText(warnings []json.RawMessage, info json.RawMessage) string {
	var parts []string
	add := func(raw json.RawMessage) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if s = strings.TrimSpace(s); s != "" {
				parts = append(parts, s)
			}
			return
		}
		var o struct {
			Warning string `json:"warning"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &o) == nil {
			if o.Warning != "" {
				parts = append(parts, strings.TrimSpace(o.Warning))
			} else if o.Message != "" {
				parts = append(parts, strings.TrimSpace(o.Message))
			}
			return
		}
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) == nil {
			for _, r := range list {
				var s string
				if json.Unmarshal(r, &s) == nil && strings.TrimSpace(s) != "" {
					parts = append(parts, strings.TrimSpace(s))
				}
			}
		}
	}
	for _, w := range warnings {
		add(w)
	}
	if len(info) > 0 {
		add(info)
	}
	return strings.Join(parts, "; ")
}
