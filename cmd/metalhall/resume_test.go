package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/lab/redfish"
)

// The machine of the resume test lives on a loopback address, so the
// service's source-address checks (boot script, metadata) see it as the
// machine with that reservation.
const (
	fakeMachineIP  = "127.42.0.10"
	fakeMachineMAC = "52:54:00:42:00:10"
)

// gates hold the fake machine at a stage until the test lets it go on.
type gates struct {
	mu      sync.Mutex
	cond    *sync.Cond
	held    map[string]bool
	waiting map[string]bool // held stages something is waiting at
}

func newGates() *gates {
	g := &gates{held: map[string]bool{}, waiting: map[string]bool{}}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gates) hold(stage string) { g.mu.Lock(); g.held[stage] = true; g.mu.Unlock() }
func (g *gates) openAll() {
	g.mu.Lock()
	clear(g.held)
	g.mu.Unlock()
	g.cond.Broadcast()
}
func (g *gates) pass(stage string) {
	g.mu.Lock()
	for g.held[stage] {
		g.waiting[stage] = true
		g.cond.Wait()
	}
	delete(g.waiting, stage)
	g.mu.Unlock()
}

// isWaiting reports whether something is held at stage now.
func (g *gates) isWaiting(stage string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting[stage]
}

// fakeMachine is what a real server does when its Redfish BMC powers it
// on: PXE-boot the agent (which calls home with the token from its iPXE
// script) or boot the installed OS from disk (which fetches its metadata).
type fakeMachine struct {
	t    *testing.T
	url  string
	g    *gates
	http *http.Client
}

func newFakeMachine(t *testing.T, url string, g *gates) *fakeMachine {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fakeMachineIP)}, Timeout: 5 * time.Second}
	return &fakeMachine{t: t, url: url, g: g, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}}
}

var tokenRE = regexp.MustCompile(`metalhall\.token=(\S+)`)

func (f *fakeMachine) boot(target string) {
	if strings.EqualFold(target, "Hdd") {
		f.g.pass("metadata")
		if resp, err := f.http.Get(f.url + "/metadata/meta-data"); err == nil {
			resp.Body.Close()
		}
		return
	}
	resp, err := f.http.Get(f.url + "/boot/" + fakeMachineMAC + ".ipxe")
	if err != nil {
		return
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := tokenRE.FindSubmatch(script)
	if m == nil {
		return // this boot is not the agent's (the job has moved on)
	}
	tok := string(m[1])
	call := func(method, endpoint string, in, out any) error {
		var body io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			body = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, f.url+wire.PathPrefix+endpoint, body)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := f.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s: %s", endpoint, resp.Status)
		}
		if out != nil {
			return json.NewDecoder(resp.Body).Decode(out)
		}
		return nil
	}
	f.g.pass("task")
	var task wire.Task
	if call("GET", wire.EndpointTask, nil, &task) != nil {
		return
	}
	call("POST", wire.EndpointInspection, wire.Inventory{System: wire.System{Vendor: "QEMU"}, CPU: wire.CPU{Sockets: 1}}, nil)
	if task.Kind == wire.KindProvision {
		// The agent streams the image with its job token.
		req, _ := http.NewRequest("GET", task.Image.URL, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := f.http.Do(req)
		if err != nil || resp.StatusCode != 200 {
			f.t.Errorf("agent image fetch: %v %v", err, resp)
			return
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		call("POST", wire.EndpointProgress, wire.Progress{JobID: task.JobID, Step: wire.StepWrite, Bytes: n, Total: n}, nil)
	}
	f.g.pass("done")
	call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepVerify}, nil)
}

// TestProvisionSurvivesSIGKILLAtEveryStep kills the real service with
// SIGKILL while a provision job is inside each of its steps, starts it
// again on the same data dir, and checks that the job completes: the
// machine ends deployed, every step done, none run more than twice.
func TestProvisionSurvivesSIGKILLAtEveryStep(t *testing.T) {
	sp := newSubproc(t, "--boot-timeout", "60s", "--stall-timeout", "60s", "--metadata-timeout", "60s")
	g := newGates()
	fm := newFakeMachine(t, sp.provURL, g)
	var rf *redfish.Server
	rf = redfish.NewServer(redfish.Config{Username: "root", Password: "pw", Latency: 100 * time.Millisecond,
		Hooks: redfish.Hooks{OnPower: func(on bool) error {
			// Held here, the service is inside its power-cycle step
			// (boot target Pxe) or its boot-disk step (Hdd).
			g.pass("power-" + rf.Boot().Target)
			if on {
				go fm.boot(rf.Boot().Target)
			}
			return nil
		}, OnBoot: func(target string) {
			// Held here, the service is inside set-pxe or set-disk-boot.
			g.pass("boot-" + target)
		}}})
	bmc := httptest.NewServer(rf)
	t.Cleanup(bmc.Close)

	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("pw"), 0o600)
	// The engine refuses netboot jobs without a boot environment; the fake
	// machine only reads its script, so any two files do.
	os.MkdirAll(filepath.Join(sp.dir, "bootenv"), 0o755)
	for _, f := range []string{bootenvKernel, bootenvInitrd} {
		os.WriteFile(filepath.Join(sp.dir, "bootenv", f), []byte("boot"), 0o644)
	}
	img := filepath.Join(dir, "os.raw")
	os.WriteFile(img, bytes.Repeat([]byte("metalhall demo os "), 60_000), 0o600)
	for _, args := range [][]string{
		{"site", "create", "s1"}, {"hall", "create", "--site", "s1", "h1"},
		{"phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "1000"},
		{"phase", "set-state", "--hall", "h1", "--number", "1", "--to", "commissioning"},
		{"subnet", "create", "--cidr", "127.42.0.0/24", "--gateway", "127.42.0.1", "lab"},
		{"rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "44", "r1"},
		{"machine", "enroll", "--rack", "r1", "--unit", "1", "--mac", fakeMachineMAC, "--ip", fakeMachineIP,
			"--bmc-address", bmc.URL, "--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw, "m1"},
		{"image", "import", "--file", img, "demo"},
		{"machine", "commission", "--wait", "m1"},
	} {
		sp.mustCLI(args...)
	}

	job := func() api.Job {
		var j api.Job
		c := api.NewClient(sp.url, sp.token)
		if err := c.Do(context.Background(), "GET", "/api/v1/machines/m1/job", nil, &j); err != nil {
			t.Fatalf("job: %v", err)
		}
		return j
	}
	// Every step is held at a point only that step reaches, so the kill
	// lands inside it, whatever the machine's speed.
	holdFor := map[string]string{"set-pxe": "boot-Pxe", "power-cycle": "power-Pxe", "wait-agent": "task", "write-image": "done",
		"set-disk-boot": "boot-Hdd", "boot-disk": "power-Hdd", "wait-metadata": "metadata"}
	for _, step := range []string{"set-pxe", "power-cycle", "wait-agent", "write-image", "set-disk-boot", "boot-disk", "wait-metadata"} {
		t.Run(step, func(t *testing.T) {
			g.hold(holdFor[step])
			sp.mustCLI("machine", "provision", "--image", "demo", "m1")
			deadline := time.Now().Add(60 * time.Second)
			for j := job(); j.StepName() != step; j = job() {
				if j.State.Finished() || time.Now().After(deadline) {
					t.Fatalf("never saw step %s: job %s at %q %s", step, j.State, j.StepName(), j.Error)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The step is where the test holds it: the kill lands inside.
			for !g.isWaiting(holdFor[step]) {
				if time.Now().After(deadline) {
					t.Fatalf("step %s never reached its hold point %s", step, holdFor[step])
				}
				time.Sleep(20 * time.Millisecond)
			}
			sp.kill()
			// The state at the kill, read from the database the dead
			// service left: the job inside the step, the machine
			// provisioning.
			func() {
				inv, err := inventory.Open(filepath.Join(sp.dir, "metalhall.db"), inventory.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer inv.Close()
				j, err := inv.ActiveJob(context.Background(), "m1")
				if err != nil {
					t.Fatalf("no active job at the kill: %v", err)
				}
				if j.StepName() != step || j.State.Finished() {
					t.Fatalf("at the kill: job %s at step %q, want running at %s", j.State, j.StepName(), step)
				}
				if m, err := inv.Machine(context.Background(), "m1"); err != nil || m.State != inventory.MachineProvisioning {
					t.Fatalf("at the kill: machine %+v %v, want provisioning", m, err)
				}
			}()
			sp.start()
			g.openAll()
			deadline = time.Now().Add(90 * time.Second)
			j := job()
			for ; !j.State.Finished(); j = job() {
				if time.Now().After(deadline) {
					t.Fatalf("job did not finish after the restart: %s at %s", j.State, j.StepName())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if j.State != "succeeded" {
				t.Fatalf("after SIGKILL at %s: job %s: %s", step, j.State, j.Error)
			}
			for _, s := range j.Steps {
				if s.State != "done" || s.Attempts > 2 {
					t.Errorf("step %s: %s after %d attempts", s.Name, s.State, s.Attempts)
				}
			}
			if out := sp.mustCLI("machine", "show", "m1"); !strings.Contains(out, "deployed") {
				t.Fatalf("machine after the job:\n%s", out)
			}
		})
	}
	// The machine's boot steps and the agent's reports are its events.
	events := sp.mustCLI("machine", "events", "--limit", "1000", "m1")
	for _, want := range []string{"boot.script", "agent.task", "agent.done", "metadata.fetched", "job.succeeded"} {
		if !strings.Contains(events, want) {
			t.Errorf("machine events lack %s", want)
		}
	}
}
