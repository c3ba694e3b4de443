package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/demoos"
	"github.com/metalhall/metalhall/lab/etcdcluster"
	"github.com/metalhall/metalhall/lab/netns"
	"github.com/metalhall/metalhall/lab/rack"
)

// TestHighAvailability is issue 15's failure behaviour with real
// processes: a three-member etcd cluster (Debian's etcd-server) and two
// `metalhall serve --store etcd` instances in the rack's namespace, both
// answering DHCP on its bridge (each on its own address), and a QEMU
// machine behind a Redfish BMC. In order:
//
//   - an instance killed while the other writes catches up from the watch
//     when it restarts;
//   - kill -9 the instance driving a provision: the machine still ends
//     deployed, through the other instance;
//   - one etcd member killed: nothing visible changes;
//   - quorum lost: writes are refused with an error that says so, and DHCP
//     for the known machine keeps answering from memory;
//   - quorum back: writes go through again.
func TestHighAvailability(t *testing.T) {
	kernel := prereqs(t)
	if err := etcdcluster.Available(); err != nil {
		t.Skip("e2e: skipped: ", err)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("e2e: skipped: busybox not found (Debian package busybox-static): the DHCP probe is its udhcpc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	e := &env{t: t, dir: t.TempDir(), kernel: kernel, images: map[string][]byte{}}
	defer e.printTimings()
	h := &ha{env: e, busybox: busybox}
	e.step("setup: build, bootenv, image, rack, etcd, two instances", func() error { return h.setup(ctx) })
	defer h.teardown()
	if t.Failed() {
		return
	}
	if !e.scenario(t, "ha1 onboarding and commissioning through instance a", func(t *testing.T) { h.onboard(ctx, t) }) {
		return
	}
	if !e.scenario(t, "ha2 b killed, a writes and starts a provision, b restarted catches up", func(t *testing.T) { h.catchUp(ctx, t) }) {
		return
	}
	e.scenario(t, "ha3 kill -9 the instance driving the provision: deployed through the other", func(t *testing.T) { h.takeover(ctx, t) })
	e.scenario(t, "ha4 one etcd member killed: nothing visible changes", func(t *testing.T) { h.oneMemberDown(ctx, t) })
	e.scenario(t, "ha5 quorum lost: writes refused, DHCP answers from memory; then back", func(t *testing.T) { h.quorumLost(ctx, t) })
}

// instance is one `metalhall serve --store etcd`.
type instance struct {
	name, data, log string
	admin           string     // the API's address, on the namespace's loopback
	addr            netip.Addr // provisioning listener and DHCP advertise address
	cmd             *exec.Cmd
	done            chan struct{}
}

func (i *instance) server() string { return "http://" + i.admin }

type ha struct {
	*env
	busybox string
	etcd    *etcdcluster.Cluster
	a, b    *instance
	probe   *netns.Namespace
	// provisionFrom is where lab-m01's console stood when the provision
	// was asked for.
	provisionFrom int64
}

func (h *ha) setup(ctx context.Context) error {
	e := h.env
	if err := e.build(ctx); err != nil {
		return err
	}
	r, err := rack.Up(ctx, rack.Config{Machines: 1, Firmware: "bios", BMC: "redfish", Dir: filepath.Join(e.dir, "rack"),
		Profile: "lab-vm", Log: &testLog{t: e.t}})
	if err != nil {
		return err
	}
	e.r = r
	// Instance a on the bridge's address, b on the next one.
	h.a = &instance{name: "a", data: filepath.Join(e.dir, "a"), log: filepath.Join(e.dir, "a.log"), admin: "127.0.0.1:8280", addr: r.Server}
	h.b = &instance{name: "b", data: filepath.Join(e.dir, "b"), log: filepath.Join(e.dir, "b.log"), admin: "127.0.0.1:8290", addr: r.Server.Next()}
	if err := r.NS.IP(ctx, "addr", "add", netip.PrefixFrom(h.b.addr, r.Subnet.Bits()).String(), "dev", r.Bridge); err != nil {
		return err
	}
	e.srvLog = h.a.log
	for _, in := range []*instance{h.a, h.b} {
		if err := os.MkdirAll(filepath.Join(in.data, "profiles"), 0o700); err != nil {
			return err
		}
		// Profiles are files of each instance's data dir: every instance
		// needs the ones its jobs check.
		if err := os.WriteFile(filepath.Join(in.data, "profiles", "lab-vm.yaml"), []byte("min_memory_gib: 0\nmin_disks: 1\n"), 0o644); err != nil {
			return err
		}
	}
	if out, err := exec.CommandContext(ctx, e.bin, "bootenv", "build", "--kernel", e.kernel, "--data-dir", h.a.data, "--agent", e.agent).CombinedOutput(); err != nil {
		return fmt.Errorf("bootenv build: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", filepath.Join(h.a.data, "bootenv"), h.b.data).CombinedOutput(); err != nil {
		return fmt.Errorf("copying the boot environment: %v: %s", err, out)
	}
	// The image's OS fetches its metadata from instance b, the one the
	// provision ends on.
	img := filepath.Join(e.dir, "demo-ha.img")
	if err := demoos.Build(ctx, demoos.Options{Out: img, Banner: "demo OS ha", MetadataURL: "http://" + net.JoinHostPort(h.b.addr.String(), "8280") + "/metadata"}); err != nil {
		return err
	}
	raw, err := os.ReadFile(img)
	if err != nil {
		return err
	}
	e.images["demo-ha"] = raw
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(img+".gz", gz.Bytes(), 0o644); err != nil {
		return err
	}

	h.etcd, err = etcdcluster.Start(ctx, etcdcluster.Config{Dir: filepath.Join(e.dir, "etcd"),
		Command: func(name string, args ...string) *exec.Cmd { return r.Command(context.Background(), name, args...) },
		Run:     r.NS.Run})
	if err != nil {
		return err
	}
	if err := h.start(ctx, h.a); err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(h.a.data, "admin.token"))
	if err != nil {
		return err
	}
	e.token = strings.TrimSpace(string(tok))
	// Every instance seals and unseals with the same key.
	key, err := os.ReadFile(filepath.Join(h.a.data, "seal.key"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(h.b.data, "seal.key"), key, 0o600); err != nil {
		return err
	}
	return h.start(ctx, h.b)
}

// start runs an instance and waits until its API answers the suite's
// admin token (b has none of its own: the inventory already has tokens).
func (h *ha) start(ctx context.Context, in *instance) error {
	e := h.env
	lf, err := os.OpenFile(in.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := e.r.Command(context.Background(), e.bin, "serve", "--store", "etcd",
		"--etcd-endpoints", strings.Join(h.etcd.Endpoints(), ","), "--instance-id", in.name, "--takeover-after", "3s",
		"--data-dir", in.data, "--listen", in.admin,
		"--provision-listen", net.JoinHostPort(in.addr.String(), "8280"),
		"--netboot-interface", e.r.Bridge, "--dhcp-mode", "reservation", "--advertise-address", in.addr.String(),
		"--power-sync-interval", "0", "--boot-timeout", "4m", "--stall-timeout", "2m", "--metadata-timeout", "4m")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	lf.Close()
	in.cmd, in.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(in.done)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-in.done:
			return fmt.Errorf("instance %s exited: %s", in.name, tailFile(in.log, 2000))
		case <-time.After(300 * time.Millisecond):
		}
		if e.token == "" {
			if tok, err := os.ReadFile(filepath.Join(in.data, "admin.token")); err == nil {
				e.token = strings.TrimSpace(string(tok))
			}
		}
		if e.token != "" {
			if _, err := h.cliAt(ctx, in, "site", "list"); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("instance %s not answering after 90s: %s", in.name, tailFile(in.log, 2000))
}

// kill9 kills an instance with SIGKILL and waits until it is gone.
func (h *ha) kill9(in *instance) {
	if in.cmd != nil && in.cmd.Process != nil {
		in.cmd.Process.Signal(syscall.SIGKILL)
		<-in.done
	}
}

func (h *ha) cliAt(ctx context.Context, in *instance, args ...string) (string, error) {
	saved := h.server
	h.server = in.server()
	defer func() { h.server = saved }()
	return h.cli(ctx, h.token, args...)
}

func (h *ha) teardown() {
	e := h.env
	if e.t.Failed() {
		for _, in := range []*instance{h.a, h.b} {
			if in != nil {
				e.t.Logf("instance %s log (tail):\n%s", in.name, tailFile(in.log, 5000))
			}
		}
		if e.r != nil {
			for _, m := range e.r.Machines {
				e.t.Logf("%s serial (tail):\n%s", m.Name, tail(m.Serial(0), 2500))
			}
		}
	}
	for _, in := range []*instance{h.a, h.b} {
		if in != nil {
			h.kill9(in)
		}
	}
	if h.probe != nil {
		h.probe.Close()
	}
	if h.etcd != nil {
		h.etcd.Close()
	}
	if e.r != nil {
		if err := e.r.Down(); err != nil {
			e.t.Errorf("rack down: %v", err)
		}
	}
}

func (h *ha) onboard(ctx context.Context, t *testing.T) {
	h.server = h.a.server()
	h.admin(t, ctx, "site", "create", "lab-site")
	h.admin(t, ctx, "hall", "create", "--site", "lab-site", "lab-hall")
	h.admin(t, ctx, "phase", "create", "--hall", "lab-hall", "--number", "1", "--power-kw", "100")
	h.admin(t, ctx, "phase", "set-state", "--hall", "lab-hall", "--number", "1", "--to", "commissioning")
	h.admin(t, ctx, "subnet", "create", "--cidr", h.r.Subnet.String(), "--gateway", h.r.Server.String(), "lab-net")
	h.admin(t, ctx, "rack", "import", "--file", h.r.Manifest)
	h.admin(t, ctx, "rack", "set-state", "--to", "installed", h.r.Rack)
	h.admin(t, ctx, "rack", "commission", h.r.Rack)
	got := h.waitState(t, ctx, 10*time.Minute, []string{"available"}, "lab-m01")
	if m := got["lab-m01"]; m.State != "available" {
		t.Fatalf("lab-m01: %s (%s at %s), want available", m.State, m.Reason, m.FailedStep)
	}
	// The image goes in through b: a holds no copy of its blob and
	// fetches it from b when its agent asks.
	h.server = h.b.server()
	h.admin(t, ctx, "image", "import", "--quiet", "--file", filepath.Join(h.dir, "demo-ha.img.gz"), "demo-ha")
}

// catchUp kills b, writes through a while b is down (a site, and the
// provision: a claims it, b being gone), restarts b and sees it catch up.
func (h *ha) catchUp(ctx context.Context, t *testing.T) {
	h.kill9(h.b)
	h.server = h.a.server()
	h.admin(t, ctx, "site", "create", "written-while-b-was-down")
	h.provisionFrom = h.r.Machine("lab-m01").SerialSize()
	h.admin(t, ctx, "machine", "provision", "--image", "demo-ha", "lab-m01")
	if err := h.start(ctx, h.b); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := h.cliAt(ctx, h.b, "site", "list")
		if err == nil && strings.Contains(out, "written-while-b-was-down") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("b restarted does not show the site written while it was down within a minute: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// takeover waits until a's provision has the agent running on the
// machine, kills a with SIGKILL, and expects b to take the job over and
// the machine to end deployed with the image's bytes, its OS booted.
func (h *ha) takeover(ctx context.Context, t *testing.T) {
	lm := h.r.Machine("lab-m01")
	wctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	if err := lm.WaitSerial(wctx, h.provisionFrom, "Run /init as init process"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // the agent is calling home or writing
	if m, err := h.show(ctx, h.token, "lab-m01"); err != nil || m.State != "provisioning" {
		t.Fatalf("lab-m01 is %s (%v) at the kill, want provisioning: the kill would prove nothing", m.State, err)
	}
	from := lm.SerialSize()
	t.Logf("SIGKILL to instance a (the job's owner: b was down when it was claimed)")
	h.kill9(h.a)
	h.server = h.b.server()
	got := h.waitState(t, ctx, 12*time.Minute, []string{"deployed"}, "lab-m01")
	m := got["lab-m01"]
	if m.State != "deployed" {
		t.Fatalf("lab-m01: %s (%s at %s) after a's death, want deployed", m.State, m.Reason, m.FailedStep)
	}
	want := h.images["demo-ha"]
	if head, err := lm.ReadDisk(len(want)); err != nil || !bytes.Equal(head, want) {
		t.Errorf("the disk's first %d bytes differ from the image (sha256 %x, want %x; %v)", len(want), sha256.Sum256(head), sha256.Sum256(want), err)
	}
	if !strings.Contains(lm.Serial(from), demoos.Marker+" demo OS ha") {
		t.Errorf("deployed but the demo OS marker is not on the console after the takeover")
	}
	events, err := h.cli(ctx, h.token, "machine", "events", "-o", "json", "lab-m01") // the table clips details
	if err != nil {
		t.Fatal(err)
	}
	// At an agent step the job is "taken over" and the machine booted
	// again; at a BMC step (the agent had finished) b "took the job over"
	// and runs the step again.
	if low := strings.ToLower(events); !strings.Contains(low, "taken over") && !strings.Contains(low, "took the job over") {
		t.Errorf("no event says the job was taken over:\n%s", tail(events, 3000))
	}
}

func (h *ha) oneMemberDown(ctx context.Context, t *testing.T) {
	h.server = h.b.server()
	h.etcd.Kill(0)
	h.admin(t, ctx, "site", "create", "one-member-down")
	if m, err := h.show(ctx, h.token, "lab-m01"); err != nil || m.State != "deployed" {
		t.Errorf("with one member down: lab-m01 %s (%v), want deployed", m.State, err)
	}
	if err := h.etcd.Restart(0); err != nil {
		t.Fatal(err)
	}
	if err := h.etcd.WaitHealthy(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

func (h *ha) quorumLost(ctx context.Context, t *testing.T) {
	h.server = h.b.server()
	// The machine off, so that the probe can take its MAC on the bridge.
	h.admin(t, ctx, "machine", "power", "--action", "off", "lab-m01")
	lm := h.r.Machine("lab-m01")
	for deadline := time.Now().Add(2 * time.Minute); lm.BMCPower(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("lab-m01 still on two minutes after its power-off")
		}
	}
	h.etcd.Kill(1)
	h.etcd.Kill(2)
	out, err := h.cli(ctx, h.token, "site", "create", "no-quorum")
	if err == nil {
		t.Fatalf("a write without quorum succeeded: %s", out)
	}
	if msg := err.Error(); !strings.Contains(msg, "cannot commit") && !strings.Contains(msg, "quorum") {
		t.Errorf("the refused write does not say why: %v", err)
	}
	t.Logf("write without quorum: %v", err)
	// Reads answer from memory.
	if m, err := h.show(ctx, h.token, "lab-m01"); err != nil || m.State != "deployed" {
		t.Errorf("without quorum: machine show lab-m01: %s (%v), want deployed", m.State, err)
	}
	// DHCP answers the machine's MAC with its reservation from memory: a
	// real DHCP client (busybox udhcpc) on a veth with that MAC.
	lease, err := h.dhcpProbe(ctx, lm)
	if err != nil {
		t.Errorf("DHCP without quorum: %v", err)
	} else if !strings.Contains(lease, "lease of "+lm.IP.String()+" obtained") {
		t.Errorf("DHCP without quorum did not lease %s:\n%s", lm.IP, lease)
	} else {
		t.Logf("DHCP without quorum: %s", strings.TrimSpace(lease))
	}
	for _, i := range []int{1, 2} {
		if err := h.etcd.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.etcd.WaitHealthy(ctx, -1); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		_, err := h.cli(ctx, h.token, "site", "create", "quorum-back")
		if err == nil {
			break
		}
		if attempt == 20 {
			t.Fatalf("writes still refused after quorum came back: %v", err)
		}
		time.Sleep(time.Second)
	}
}

// dhcpProbe runs one DHCP exchange with the machine's MAC from a
// namespace of its own, cabled to the rack's bridge.
func (h *ha) dhcpProbe(ctx context.Context, lm *rack.Machine) (string, error) {
	var err error
	if h.probe, err = netns.New(ctx, "mhprobe"); err != nil {
		return "", err
	}
	if err := h.r.NS.IP(ctx, "link", "add", "mhprobe0", "type", "veth", "peer", "name", "mhprobe1", "netns", h.probe.Name); err != nil {
		return "", err
	}
	if err := h.r.NS.IP(ctx, "link", "set", "mhprobe0", "master", h.r.Bridge, "up"); err != nil {
		return "", err
	}
	if err := h.probe.IP(ctx, "link", "set", "mhprobe1", "address", lm.MAC.String(), "up"); err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := h.probe.Command(cctx, h.busybox, "udhcpc", "-i", "mhprobe1", "-n", "-q", "-f", "-t", "5", "-T", "2", "-s", "/bin/true").CombinedOutput()
	return string(out), err
}
