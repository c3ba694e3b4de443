// Package failover_test measures how long a job waits when the instance
// driving it dies: a three-member etcd cluster (Debian's etcd-server),
// two real `metalhall serve --store etcd` processes on loopback, and a
// commission job per round against a loopback Redfish BMC emulator. The
// job runs its BMC steps and waits at wait-agent (no machine boots); the
// bench kills its owner with SIGKILL there and measures the time from the
// kill to the job's next step event (step.resumed) written by the other
// instance, once with --takeover-after 10s (the default) and once with 3s,
// ROUNDS times each (default 5).
//
// It is opt-in (it takes a few minutes and builds the binary):
//
//	METALHALL_BENCH_FAILOVER=1 go test -run Failover -v -timeout 20m ./bench/failover/
package failover_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/bench/benchengine"
	"github.com/metalhall/metalhall/cluster"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/lab/etcdcluster"
	"github.com/metalhall/metalhall/lab/redfish"
	"github.com/metalhall/metalhall/service"
)

// instance is one `metalhall serve --store etcd` process. Its listeners
// are bound by the bench and handed over by socket activation, so a
// restart gets the same addresses and nothing else can take them between.
type instance struct {
	t          *testing.T
	id, dir    string
	bin        string
	url        string
	flags      []string
	files      []*os.File
	cmd        *exec.Cmd
	exited     chan struct{}
	adminAddr  string
	provAddr   string
	stderrPath string
}

func newInstance(t *testing.T, bin, id, dir string, flags []string) *instance {
	t.Helper()
	in := &instance{t: t, id: id, dir: dir, bin: bin, flags: flags, stderrPath: filepath.Join(dir, "serve.log")}
	for _, name := range []string{"admin", "provisioning"} {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close(); ln.Close() })
		in.files = append(in.files, f)
		if name == "admin" {
			in.adminAddr = ln.Addr().String()
		} else {
			in.provAddr = ln.Addr().String()
		}
	}
	in.url = "http://" + in.adminAddr
	// The engine refuses netboot jobs without a boot environment; no
	// machine boots here, so any two files do.
	if err := os.MkdirAll(filepath.Join(dir, "bootenv"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{service.BootenvKernel, service.BootenvInitrd} {
		if err := os.WriteFile(filepath.Join(dir, "bootenv", f), []byte("boots nothing\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(in.kill)
	return in
}

// start runs the binary and waits until its API answers.
func (in *instance) start(ctx context.Context) {
	in.t.Helper()
	logf, err := os.OpenFile(in.stderrPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		in.t.Fatal(err)
	}
	// LISTEN_PID must be the service's own PID, known only after the
	// fork: a shell sets it to its own and execs the binary in its place.
	args := append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, in.bin, "serve", "--data-dir", in.dir,
		"--listen", in.adminAddr, "--provision-listen", in.provAddr, "--instance-id", in.id}, in.flags...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = in.files
	cmd.Env = append(os.Environ(), "LISTEN_FDS=2", "LISTEN_FDNAMES=admin:provisioning")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		in.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	in.cmd, in.exited = cmd, exited
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", in.url+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-exited:
			in.t.Fatalf("instance %s exited at start; see %s", in.id, in.stderrPath)
		case <-ctx.Done():
			in.t.Fatalf("instance %s did not answer within 60s; see %s", in.id, in.stderrPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill ends the process with SIGKILL and waits until it is gone.
func (in *instance) kill() {
	if in.cmd == nil {
		return
	}
	in.cmd.Process.Signal(syscall.SIGKILL)
	<-in.exited
	in.cmd = nil
}

// cli runs the CLI against this instance.
func (in *instance) cli(token string, args ...string) {
	in.t.Helper()
	out, err := exec.Command(in.bin, append([]string{"--server", in.url, "--token", token}, args...)...).CombinedOutput()
	if err != nil {
		in.t.Fatalf("metalhall %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestFailover(t *testing.T) {
	if os.Getenv("METALHALL_BENCH_FAILOVER") != "1" {
		t.Skip("opt-in benchmark: METALHALL_BENCH_FAILOVER=1")
	}
	if err := etcdcluster.Available(); err != nil {
		t.Fatal(err)
	}
	rounds := 5
	if v := os.Getenv("ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("ROUNDS=%q: give a positive number of rounds", v)
		}
		rounds = n
	}
	ctx := t.Context()
	dir := t.TempDir()
	bin := filepath.Join(dir, "metalhall")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/metalhall/metalhall/cmd/metalhall").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	etcd, err := benchengine.StartCluster(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	for _, ttl := range []time.Duration{10 * time.Second, 3 * time.Second} {
		t.Run("takeover-after="+ttl.String(), func(t *testing.T) {
			d := measure(t, cli, bin, etcd.Endpoints(), ttl, rounds)
			slices.Sort(d)
			t.Logf("RESULT takeover-after=%v rounds=%d kill→next step: min %.2fs median %.2fs max %.2fs (all: %s)",
				ttl, len(d), d[0].Seconds(), d[len(d)/2].Seconds(), d[len(d)-1].Seconds(), secs(d))
		})
	}
}

func secs(d []time.Duration) string {
	var s []string
	for _, x := range d {
		s = append(s, fmt.Sprintf("%.2f", x.Seconds()))
	}
	return strings.Join(s, " ")
}

// measure runs rounds failovers with two instances on a fresh inventory
// prefix, and returns the time from each kill to the job's next step.
func measure(t *testing.T, cli *clientv3.Client, bin string, endpoints []string, ttl time.Duration, rounds int) []time.Duration {
	ctx := t.Context()
	prefix := fmt.Sprintf("/failover-%d/", int(ttl.Seconds()))
	flags := []string{"--store", "etcd", "--etcd-endpoints", strings.Join(endpoints, ","), "--etcd-prefix", prefix,
		"--takeover-after", ttl.String(), "--dhcp-mode", "off", "--power-sync-interval", "0", "--log-level", "warn",
		// No machine boots: the job waits at wait-agent for as long as
		// the bench needs.
		"--boot-timeout", "1h"}
	a := newInstance(t, bin, "a", t.TempDir(), flags)
	a.start(ctx)
	tok, err := os.ReadFile(filepath.Join(a.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	b := newInstance(t, bin, "b", t.TempDir(), flags)
	// Every instance seals with the same key.
	key, err := os.ReadFile(filepath.Join(a.dir, "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "seal.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b.start(ctx)
	insts := []*instance{a, b}

	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"site", "create", "s1"}, {"hall", "create", "--site", "s1", "h1"},
		{"phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "1000"},
		{"phase", "set-state", "--hall", "h1", "--number", "1", "--to", "commissioning"},
		{"rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "440", "r1"},
	} {
		a.cli(token, args...)
	}
	for i := 1; i <= rounds; i++ {
		bmc := httptest.NewServer(redfish.NewServer(redfish.Config{Username: "root", Password: "pw"}))
		t.Cleanup(bmc.Close)
		a.cli(token, "machine", "enroll", "--rack", "r1", "--unit", strconv.Itoa(i), "--mac", fmt.Sprintf("52:54:00:fa:00:%02x", i),
			"--bmc-address", bmc.URL, "--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw, fmt.Sprintf("m%d", i))
	}

	var out []time.Duration
	for i := 1; i <= rounds; i++ {
		m := fmt.Sprintf("m%d", i)
		live := insts[i%2] // ask either instance in turn
		c := api.NewClient(live.url, token)
		live.cli(token, "machine", "commission", m)
		j := waitStep(t, c, m, "wait-agent")
		owner := ownerOf(t, cli, prefix, j.ID)
		var dead, survivor *instance
		for _, in := range insts {
			if in.id == owner {
				dead = in
			} else {
				survivor = in
			}
		}
		if dead == nil {
			t.Fatalf("round %d: job %s is owned by %q, neither instance", i, j.ID, owner)
		}
		sc := api.NewClient(survivor.url, token)
		after := lastSeq(t, sc, m)
		killed := time.Now()
		dead.kill()
		ev := nextStep(t, sc, m, after, 10*ttl+30*time.Second)
		took := ev.Time.Sub(killed)
		t.Logf("round %d: job %s owned by %s, killed at wait-agent; %s %q by %s after %.2fs", i, j.ID, dead.id, ev.Action, ev.Detail, survivor.id, took.Seconds())
		out = append(out, took)
		// The dead instance's lease has expired (its job was taken
		// over): it comes back under the same ID for the next round.
		dead.start(ctx)
	}
	for _, in := range insts {
		in.kill()
	}
	return out
}

// waitStep polls the machine's job until it is running step.
func waitStep(t *testing.T, c *api.Client, machine, step string) api.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for {
		j, err := api.Call(ctx, c, api.Ops.MachineJob(), api.NoBody{}, machine)
		if err == nil && j.StepName() == step {
			return j
		}
		if err == nil && j.State.Finished() {
			t.Fatalf("%s: job %s ended %s at %q: %s", machine, j.ID, j.State, j.StepName(), j.Error)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: job never reached %s (last: %v %+v)", machine, step, err, j.Steps)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ownerOf reads which instance owns the job from the cluster's keys.
func ownerOf(t *testing.T, cli *clientv3.Client, inventoryPrefix, job string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		resp, err := cli.Get(ctx, cluster.PrefixFor(inventoryPrefix)+"owners/"+job)
		if err == nil && len(resp.Kvs) == 1 {
			return string(resp.Kvs[0].Value)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s has no owner in etcd (%v)", job, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func events(ctx context.Context, c *api.Client, machine string, after uint64) ([]inventory.Event, error) {
	return api.Call(ctx, c, api.Ops.MachineEvents().Query(url.Values{"after": {strconv.FormatUint(after, 10)}}), api.NoBody{}, machine)
}

// lastSeq is the sequence number of the machine's latest event.
func lastSeq(t *testing.T, c *api.Client, machine string) uint64 {
	t.Helper()
	var last uint64
	for {
		evs, err := events(t.Context(), c, machine, last)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return last
		}
		last = evs[len(evs)-1].Seq
	}
}

// nextStep polls the survivor for the machine's next step event after
// seq. The event's own time (written by the survivor, on this machine's
// clock) is what is measured, not when the poll saw it.
func nextStep(t *testing.T, c *api.Client, machine string, seq uint64, limit time.Duration) inventory.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	for {
		evs, err := events(ctx, c, machine, seq)
		for _, ev := range evs {
			if ev.Action == "step.resumed" || ev.Action == "step.started" {
				return ev
			}
			seq = ev.Seq
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no next step within %v after the kill (last: %v)", machine, limit, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
