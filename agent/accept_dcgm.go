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

// dcgmDeadline bounds `dcgmi diag` per level so that it ends well inside
// the service's wait for the inspection (10 minutes by default). Levels 3
// and 4 take 15 minutes or more; profiles cannot ask for them.
func dcgmDeadline(level int) time.Duration {
	if level <= 1 {
		return 3 * time.Minute
	}
	return 7 * time.Minute
}

// runDCGM runs NVIDIA's diagnostic when the boot environment has it.
// Without dcgmi, or when it produced nothing readable, the result says
// why it did not run: a diagnostic that did not run is never a pass.
func runDCGM(ctx context.Context, level int) *wire.DCGMResult {
	path, err := exec.LookPath("dcgmi")
	if err != nil {
		return &wire.DCGMResult{Level: level, Reason: "no DCGM in the boot environment"}
	}
	ctx, cancel := context.WithTimeout(ctx, dcgmDeadline(level))
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "diag", "-r", strconv.Itoa(level), "-j")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return &wire.DCGMResult{Level: level, Reason: fmt.Sprintf("dcgmi diag -r %d did not finish within %v", level, dcgmDeadline(level))}
	}
	// dcgmi exits non-zero when a test fails: its JSON still says which.
	res, err := parseDCGMDiag(stdout.Bytes(), level)
	if err != nil {
		why := err.Error()
		if runErr != nil {
			why = fmt.Sprintf("dcgmi diag -r %d: %v: %s", level, runErr, firstLine(stderr.String()+stdout.String()))
		}
		return &wire.DCGMResult{Level: level, Reason: why}
	}
	return res
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if l, _, ok := strings.Cut(s, "\n"); ok {
		return l
	}
	return s
}

// dcgmDoc is the JSON `dcgmi diag -j` prints (DCGM 2.x and 3.x):
// {"DCGM GPU Diagnostic": {"test_categories": [{"category", "tests":
// [{"name", "results": [{"gpu_ids", "status", "warnings", "info"}]}]}],
// "version"}}. Tests can be null; warnings are strings or objects with a
// "warning" field depending on the version; info a string or a list.
type dcgmDoc struct {
	Diag *struct {
		Categories []struct {
			Category string `json:"category"`
			Tests    []*struct {
				Name    string `json:"name"`
				Results []struct {
					GPUIDs   json.RawMessage   `json:"gpu_ids"`
					GPUID    json.RawMessage   `json:"gpu_id"`
					Status   string            `json:"status"`
					Warnings []json.RawMessage `json:"warnings"`
					Info     json.RawMessage   `json:"info"`
				} `json:"results"`
			} `json:"tests"`
		} `json:"test_categories"`
		Version string `json:"version"`
	} `json:"DCGM GPU Diagnostic"`
}

var errNoDCGMResults = errors.New("dcgmi diag gave no test results")

// parseDCGMDiag reads dcgmi's JSON. Text before the document (dcgmi
// prints warnings there) is skipped.
func parseDCGMDiag(out []byte, level int) (*wire.DCGMResult, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return nil, errNoDCGMResults
	}
	var doc dcgmDoc
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(&doc); err != nil {
		return nil, fmt.Errorf("dcgmi diag output: %w", err)
	}
	if doc.Diag == nil {
		return nil, errNoDCGMResults
	}
	res := &wire.DCGMResult{Ran: true, Level: level}
	for _, c := range doc.Diag.Categories {
		for _, t := range c.Tests {
			if t == nil {
				continue
			}
			for _, r := range t.Results {
				ids := r.GPUIDs
				if len(ids) == 0 {
					ids = r.GPUID
				}
				res.Tests = append(res.Tests, wire.DCGMTest{Category: c.Category, Name: t.Name, GPU: dcgmGPU(ids),
					Result: dcgmStatus(r.Status), Info: dcgmText(r.Warnings, r.Info)})
			}
		}
	}
	if len(res.Tests) == 0 {
		return nil, errNoDCGMResults
	}
	return res, nil
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
