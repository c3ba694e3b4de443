package bmc

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sushyEnv names a sushy-tools source tree (github.com/openstack/sushy-tools,
// the Redfish emulator Ironic and Metal3 test against). The test runs it
// with its fake driver and HTTP basic auth, on loopback only.
const sushyEnv = "METALHALL_SUSHY_TOOLS"

// startSushy runs sushy-tools on 127.0.0.1 (an ephemeral port it reports
// itself) and returns the endpoint of its one fake system.
func startSushy(t *testing.T) Endpoint {
	t.Helper()
	src := os.Getenv(sushyEnv)
	if src == "" {
		t.Skipf("%s is not set: point it at a sushy-tools source tree to run this test "+
			"(needs /usr/bin/python3 with the Debian packages python3-flask python3-requests python3-tenacity python3-bcrypt python3-webob python3-pbr)", sushyEnv)
	}
	if _, err := os.Stat(filepath.Join(src, "sushy_tools", "emulator", "main.py")); err != nil {
		t.Fatalf("%s=%s is not a sushy-tools source tree: %v", sushyEnv, src, err)
	}
	dir := t.TempDir()
	const user, pass = "admin", "sushy-pw"
	// A low bcrypt cost: sushy-tools checks the password on every request,
	// and at the default cost that is most of a second per request here.
	hash, err := exec.Command("/usr/bin/python3", "-c",
		"import bcrypt,sys; sys.stdout.write(bcrypt.hashpw(b'"+pass+"', bcrypt.gensalt(rounds=4)).decode())").Output()
	if err != nil {
		t.Fatalf("bcrypt hash with /usr/bin/python3 (Debian package python3-bcrypt): %v", err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(user+":"+string(hash)+"\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "emulator.conf"), []byte(`SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = 0
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_AUTH_FILE = '`+filepath.Join(dir, "htpasswd")+`'
`), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-m", "sushy_tools.emulator.main",
		"--config", filepath.Join(dir, "emulator.conf"), "--fake")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "PBR_VERSION=1.0.0", "PYTHONPATH="+src)
	stderr, err := cmd.StderrPipe()
	must(err)
	cmd.Stdout = nil
	must(cmd.Start())
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })

	// Flask prints the address it bound once it listens: that line is the
	// barrier.
	running := regexp.MustCompile(`Running on (http://127\.0\.0\.1:\d+)`)
	addr := make(chan string, 1)
	var lines []string
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := running.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addr <- m[1]
				sent = true
			}
			if !sent {
				lines = append(lines, sc.Text())
			}
		}
		if !sent {
			close(addr)
		}
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatalf("sushy-tools exited before listening:\n%s", strings.Join(lines, "\n"))
		}
		return Endpoint{Address: a, Protocol: Redfish, Username: user, Password: pass}
	case <-time.After(60 * time.Second):
		t.Fatal("sushy-tools did not start listening within 60s")
	}
	return Endpoint{}
}

// TestAgainstSushyTools drives sushy-tools' fake system. Its fake driver
// applies each power change 1-11 s after accepting it, as hardware does:
// each power step here waits for it.
func TestAgainstSushyTools(t *testing.T) {
	ep := startSushy(t)
	c := testController(t, Config{OpTimeout: 20 * time.Second, PowerTimeout: 20 * time.Second})
	ctx := ctxT(t, 2*time.Minute)

	for _, a := range []PowerAction{ActionOn, ActionCycle, ActionOff, ActionOn, ActionReset, ActionOff} {
		t0 := time.Now()
		if err := c.SetPower(ctx, ep, a); err != nil {
			t.Fatalf("power %s: %v", a, err)
		}
		t.Logf("power %s took %s", a, time.Since(t0))
		want, _ := a.target()
		if st, err := c.PowerState(ctx, ep); err != nil || st != want {
			t.Fatalf("after %s: power %s %v, want %s", a, st, err, want)
		}
	}

	if err := c.SetBootDevice(ctx, ep, BootOptions{Device: BootPXE, Persistent: true, UEFI: true}); err != nil {
		t.Fatalf("boot pxe persistent: %v", err)
	}
	if err := c.SetBootDevice(ctx, ep, BootOptions{Device: BootDisk, Persistent: true, UEFI: true}); err != nil {
		t.Fatalf("boot disk persistent: %v", err)
	}
	bo, err := c.BootOverride(ctx, ep)
	if err != nil || bo.Device != BootDisk || !bo.Persistent {
		t.Fatalf("boot override %+v %v", bo, err)
	}
	// A one-time override is either kept as asked or reported for what it
	// is: never printed as "next boot" while the BMC keeps it for every boot.
	err = c.SetBootDevice(ctx, ep, BootOptions{Device: BootPXE, UEFI: true})
	bo2, rerr := c.BootOverride(ctx, ep)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil && bo2.Persistent {
		t.Fatalf("once accepted without error but the BMC reports %+v", bo2)
	}
	if err != nil {
		wantKind(t, err, KindProtocol)
		t.Logf("sushy-tools, once asked: %v", err)
	}

	bad := ep
	bad.Password = "not-it"
	_, err = c.PowerState(ctx, bad)
	wantKind(t, err, KindAuth)
}
