// Command demo is what `make demo` runs (through scripts/demo.sh): it
// starts metalhall in a temporary data dir inside a virtual rack's network
// namespace, brings up a lab rack of QEMU machines (mixed BIOS/UEFI,
// Redfish/IPMI), imports it, builds the agent's boot environment and a
// small demo OS image, commissions the rack, provisions every machine,
// shows progress as it goes, and ends with a summary table. It cleans up
// on exit and on Ctrl-C (with -keep it waits for Ctrl-C first, so the
// rack can be explored).
//
//	demo [-machines 4] [-bin bin/metalhall] [-agent bin/metalhall-agent] [-keep] [-dir DIR]
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/lab/demoos"
	"github.com/metalhall/metalhall/lab/rack"
)

var start = time.Now()

func stamp() string {
	d := time.Since(start).Round(time.Second)
	return fmt.Sprintf("[%02d:%02d]", int(d.Minutes()), int(d.Seconds())%60)
}

var outMu sync.Mutex

func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf("%s %s\n", stamp(), fmt.Sprintf(format, args...))
}

type labLog struct{}

func (labLog) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// "lab: 20:07:03 lab-m01: power off" -> drop the clock.
		l = strings.TrimPrefix(l, "lab: ")
		if i := strings.IndexByte(l, ' '); i == 8 {
			l = l[i+1:]
		}
		say("  lab  %s", l)
	}
	return len(b), nil
}

type demo struct {
	bin, agent, dir, data, token string
	r                            *rack.Rack
	srv                          *exec.Cmd
	srvDone                      chan struct{}
	// consoleURL is the web console as this host reaches it: a listener
	// on the host's loopback forwarded into the namespace.
	consoleURL  string
	stopConsole func()
	// per machine: when it entered each state
	seen map[string]map[string]time.Time
	last map[string]string
}

func main() {
	machines := flag.Int("machines", 4, "machines in the lab rack (mixed BIOS/UEFI, Redfish/IPMI)")
	bin := flag.String("bin", "bin/metalhall", "metalhall binary")
	agent := flag.String("agent", "bin/metalhall-agent", "agent binary (static)")
	keep := flag.Bool("keep", os.Getenv("KEEP") != "", "keep everything up at the end until Ctrl-C (env KEEP=1)")
	dir := flag.String("dir", "", "working directory (default: a new temporary one, removed at the end)")
	flag.Parse()
	code := run(*machines, *bin, *agent, *dir, *keep)
	os.Exit(code)
}

func run(n int, bin, agent, dir string, keep bool) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces, taps): run `sudo make demo`")
		return 2
	}
	if err := rack.Available(rack.Config{Firmware: "mixed", BMC: "mixed"}); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v (`make demo` installs the Debian packages it needs)\n", err)
		return 2
	}
	if err := demoos.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 2
	}
	d := &demo{seen: map[string]map[string]time.Time{}, last: map[string]string{}}
	var err error
	if d.bin, err = filepath.Abs(bin); err == nil {
		d.agent, err = filepath.Abs(agent)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 2
	}
	for _, p := range []string{d.bin, d.agent} {
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %s missing: run `make build` first\n", p)
			return 2
		}
	}
	ownDir := dir == ""
	if ownDir {
		if dir, err = os.MkdirTemp("", "metalhall-demo-"); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
	}
	d.dir, _ = filepath.Abs(dir)
	d.data = filepath.Join(d.dir, "data")
	defer func() {
		say("cleaning up: service, machines, BMCs, namespace")
		if d.stopConsole != nil {
			d.stopConsole()
		}
		d.stopService()
		if d.r != nil {
			if err := d.r.Down(); err != nil {
				say("  rack down: %v", err)
			}
		} else {
			rack.Down(filepath.Join(d.dir, "rack"))
		}
		if ownDir {
			os.RemoveAll(d.dir)
		}
		say("done")
	}()
	if err := d.main(ctx, n, keep); err != nil {
		if ctx.Err() != nil {
			say("interrupted")
			return 130
		}
		say("FAILED: %v", err)
		say("service log: %s (tail below)", filepath.Join(d.dir, "serve.log"))
		b, _ := os.ReadFile(filepath.Join(d.dir, "serve.log"))
		fmt.Println(tail(string(b), 3000))
		if keep {
			d.wait(ctx)
		}
		return 1
	}
	if keep {
		d.wait(ctx)
	}
	return 0
}

func (d *demo) wait(ctx context.Context) {
	say("everything stays up until Ctrl-C")
	<-ctx.Done()
}

func (d *demo) main(ctx context.Context, n int, keep bool) error {
	say("metalhall demo: %d virtual machines, real firmware, real BMC protocols (work dir %s)", n, d.dir)
	if err := os.MkdirAll(filepath.Join(d.data, "profiles"), 0o700); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(d.data, "profiles", "lab-vm.yaml"), []byte("# a QEMU lab machine: one disk, no GPUs\nmin_disks: 1\n"), 0o644)

	say("building the agent's boot environment (Debian kernel + static agent + modules)")
	k, err := demoos.FindKernel()
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, d.bin, "bootenv", "build", "--kernel", k, "--data-dir", d.data, "--agent", d.agent).CombinedOutput(); err != nil {
		return fmt.Errorf("bootenv build: %v: %s", err, out)
	}
	say("building the demo OS image (vfat + syslinux, BIOS and UEFI bootable)")
	img := filepath.Join(d.dir, "demo-os.img")
	if err := demoos.Build(ctx, demoos.Options{Out: img, Banner: "metalhall demo OS", MetadataURL: "http://10.98.0.1:8280/metadata"}); err != nil {
		return err
	}
	raw, _ := os.ReadFile(img)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(raw)
	zw.Close()
	os.WriteFile(img+".gz", gz.Bytes(), 0o644)
	say("  %s: %d MiB raw, %.1f MiB gzip", filepath.Base(img), len(raw)>>20, float64(gz.Len())/(1<<20))

	say("bringing up the lab rack: namespace, bridge 10.98.0.1/24, %d QEMU machines, their BMCs", n)
	d.r, err = rack.Up(ctx, rack.Config{Machines: n, Firmware: "mixed", BMC: "mixed", Dir: filepath.Join(d.dir, "rack"),
		Rack: "demo-r01", Hall: "hall-a", Prefix: "demo-m", Profile: "lab-vm", Log: labLog{}})
	if err != nil {
		return err
	}
	for _, m := range d.r.Machines {
		say("  %-8s %-4s firmware  %-7s BMC %-26s MAC %s  IP %s", m.Name, m.Firmware, m.BMCProtocol, m.BMCAddress, m.MAC, m.IP)
	}
	say("starting metalhall serve in namespace %s (DHCP/TFTP/HTTP boot on %s)", d.r.NS.Name, d.r.Bridge)
	if err := d.startService(ctx); err != nil {
		return err
	}
	if err := d.exposeConsole(ctx); err != nil {
		return err
	}
	say("web console: %s (sign in with the token %s); the rack commissions there live", d.consoleURL, d.token)
	for _, c := range [][]string{
		{"site", "create", "demo-site"},
		{"hall", "create", "--site", "demo-site", "hall-a"},
		{"phase", "create", "--hall", "hall-a", "--number", "1", "--power-kw", "100"},
		{"phase", "set-state", "--hall", "hall-a", "--number", "1", "--to", "commissioning"},
		{"subnet", "create", "--cidr", "10.98.0.0/24", "--gateway", "10.98.0.1", "lab-net"},
		{"rack", "import", "--file", d.r.Manifest},
		{"rack", "set-state", "--to", "installed", d.r.Rack},
		{"image", "import", "--quiet", "--file", img + ".gz", "demo-os"},
	} {
		if _, err := d.cli(ctx, true, c...); err != nil {
			return err
		}
	}
	names := make([]string, len(d.r.Machines))
	for i, m := range d.r.Machines {
		names[i] = m.Name
	}
	phaseStart := time.Now()
	if _, err := d.cli(ctx, true, "rack", "commission", d.r.Rack); err != nil {
		return err
	}
	if err := d.follow(ctx, names, "available", 12*time.Minute); err != nil {
		return err
	}
	commission := time.Since(phaseStart)
	for _, nm := range names {
		if _, err := d.cli(ctx, true, "machine", "provision", "--image", "demo-os", nm); err != nil {
			return err
		}
	}
	if err := d.follow(ctx, names, "deployed", 12*time.Minute); err != nil {
		return err
	}
	provision := time.Since(phaseStart) - commission
	m0 := d.r.Machines[0]
	if s := m0.Serial(0); strings.Contains(s, "----- metadata") {
		i := strings.LastIndex(s, "----- metadata")
		say("%s's serial console, booted from its disk:", m0.Name)
		for _, l := range strings.Split(strings.TrimSpace(tail(s[i:], 800)), "\n") {
			fmt.Println("    " + strings.TrimRight(l, "\r"))
		}
	}
	d.summary(commission, provision, keep)
	return nil
}

func (d *demo) startService(ctx context.Context) error {
	lf, err := os.Create(filepath.Join(d.dir, "serve.log"))
	if err != nil {
		return err
	}
	cmd := d.r.Command(context.Background(), d.bin, "serve", "--data-dir", d.data, "--listen", "127.0.0.1:8280",
		// Machines reach the provisioning listener on the bridge; the API
		// stays on the namespace's loopback.
		"--provision-listen", net.JoinHostPort(d.r.Server.String(), "8280"),
		"--netboot-interface", d.r.Bridge, "--dhcp-mode", "reservation", "--advertise-address", d.r.Server.String(),
		"--power-sync-interval", "0", "--boot-timeout", "5m", "--metadata-timeout", "5m")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C goes to us; we stop it
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	lf.Close()
	d.srv, d.srvDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(d.srvDone) }()
	for i := 0; i < 200; i++ {
		select {
		case <-d.srvDone:
			return fmt.Errorf("metalhall serve exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
		if d.token == "" {
			if b, err := os.ReadFile(filepath.Join(d.data, "admin.token")); err == nil {
				d.token = strings.TrimSpace(string(b))
			}
		}
		if d.token != "" {
			if _, err := d.cli(ctx, false, "site", "list"); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("metalhall serve did not answer within a minute")
}

// exposeConsole makes the web console reachable from this host: the
// service's admin listener is on the namespace's loopback, so a listener
// on the host's loopback (port 8280 when free, else one the kernel picks)
// is forwarded into the namespace. It checks the URL before saying it:
// the sign-in page answers, and the admin token signs in.
func (d *demo) exposeConsole(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:8280")
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("web console: a listener on this host's loopback: %w", err)
		}
	}
	fctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.r.NS.Forward(fctx, ln, "127.0.0.1:8280"); err != nil {
			say("  web console forward: %v", err)
		}
	}()
	d.stopConsole = func() { cancel(); <-done }
	d.consoleURL = "http://" + ln.Addr().String() + "/ui/"
	return checkConsole(ctx, d.consoleURL, d.token)
}

// checkConsole signs in to the console at url with token, as a browser
// would: the sign-in page, then the token exchanged for a session cookie.
func checkConsole(ctx context.Context, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"login", nil)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("web console %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("web console %slogin: %s", url, resp.Status)
	}
	req, _ = http.NewRequestWithContext(ctx, "POST", url+"login", strings.NewReader(neturl.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err = c.Do(req); err != nil {
		return fmt.Errorf("web console sign-in: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) == 0 {
		return fmt.Errorf("web console sign-in with the admin token: %s, want 303 with a session cookie", resp.Status)
	}
	return nil
}

func (d *demo) stopService() {
	if d.srv == nil || d.srv.Process == nil {
		return
	}
	d.srv.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.srvDone:
	case <-time.After(15 * time.Second):
		d.srv.Process.Kill()
		<-d.srvDone
	}
}

func (d *demo) cli(ctx context.Context, show bool, args ...string) (string, error) {
	if show {
		say("$ metalhall %s", strings.Join(args, " "))
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := d.r.Command(cctx, d.bin, args...)
	cmd.Env = append(os.Environ(), "METALHALL_SERVER=http://127.0.0.1:8280", "METALHALL_TOKEN="+d.token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("metalhall %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

type machineRow struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Reason     string `json:"reason"`
	FailedStep string `json:"failed_step"`
}

// follow prints every state change until all machines are in want (or
// failed), or timeout.
func (d *demo) follow(ctx context.Context, names []string, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := d.cli(ctx, false, "machine", "list", "-o", "json", "--rack", d.r.Rack)
		if err == nil {
			var ms []machineRow
			json.Unmarshal([]byte(out), &ms)
			done := 0
			var failed []string
			for _, m := range ms {
				if d.seen[m.Name] == nil {
					d.seen[m.Name] = map[string]time.Time{}
				}
				if d.last[m.Name] != m.State {
					d.last[m.Name] = m.State
					d.seen[m.Name][m.State] = time.Now()
					extra := ""
					if m.State == "failed" {
						extra = fmt.Sprintf(" at %s: %s", m.FailedStep, m.Reason)
					}
					say("%-8s → %s%s", m.Name, m.State, extra)
				}
				switch m.State {
				case want:
					done++
				case "failed":
					failed = append(failed, m.Name)
				}
			}
			if done+len(failed) == len(names) && len(ms) == len(names) {
				if len(failed) > 0 {
					return fmt.Errorf("machines failed: %s", strings.Join(failed, ", "))
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("machines not %s within %v", want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func (d *demo) summary(commission, provision time.Duration, keep bool) {
	fmt.Println()
	fmt.Printf("%-9s %-9s %-8s %-10s %-13s %-13s %s\n", "MACHINE", "FIRMWARE", "BMC", "STATE", "COMMISSION", "PROVISION", "BOOTS")
	names := make([]string, 0, len(d.r.Machines))
	for _, m := range d.r.Machines {
		names = append(names, m.Name)
	}
	sort.Strings(names)
	for _, nm := range names {
		m := d.r.Machine(nm)
		s := d.seen[nm]
		dur := func(from, to string) string {
			if s[from].IsZero() || s[to].IsZero() {
				return "-"
			}
			return s[to].Sub(s[from]).Round(time.Second).String()
		}
		boots, _ := m.Boots()
		fmt.Printf("%-9s %-9s %-8s %-10s %-13s %-13s %d\n", nm, m.Firmware, m.BMCProtocol, d.last[nm],
			dur("commissioning", "available"), dur("provisioning", "deployed"), boots)
	}
	fmt.Printf("\nrack commissioned in %s, every machine provisioned in %s more; total %s\n\n",
		commission.Round(time.Second), provision.Round(time.Second), time.Since(start).Round(time.Second))
	ns := d.r.NS.Name
	if keep {
		fmt.Printf("Explore further (everything stays up until Ctrl-C):\n")
	} else {
		fmt.Printf("Explore further: run `sudo KEEP=1 make demo` to keep the rack and the service up until Ctrl-C, then:\n")
	}
	fmt.Printf("  web console: %s on this host; sign in with the token %s\n", d.consoleURL, d.token)
	fmt.Printf("    (inside the namespace it is http://127.0.0.1:8280/ui/: sudo ip netns exec %s chromium --no-sandbox http://127.0.0.1:8280/ui/)\n", ns)
	fmt.Printf("  alias mh='ip netns exec %s env METALHALL_TOKEN=%s %s'\n", ns, d.token, d.bin)
	fmt.Printf("  mh machine list\n  mh machine show %s\n  mh machine events %s\n  mh rack show %s\n", names[0], names[0], d.r.Rack)
	fmt.Printf("  mh machine release %s      # wipe, then available again\n", names[0])
	fmt.Printf("  tail -f %s/serial.log     # a machine's serial console\n", d.r.Machine(names[0]).Dir)
	fmt.Printf("  less %s/serve.log\n\n", d.dir)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
