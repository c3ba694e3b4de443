// Package packaging holds what installs metalhall as a service: the
// systemd unit and the example configuration the Debian package ships
// (make deb, scripts/mkdeb). Its test builds the package and installs it.
package packaging

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDebInstallsIntoACleanRootAndRuns builds the package with make deb,
// installs it with dpkg into an empty root, runs the installed binary
// there, starts the service on the installed example configuration, checks
// the unit with systemd-analyze where systemd is installed, and removes
// and purges the package again.
func TestDebInstallsIntoACleanRootAndRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the package")
	}
	for _, tool := range []string{"make", "dpkg", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	out := t.TempDir()
	const version = "1.2.3~test"
	build := exec.Command("make", "-C", "..", "deb", "DEB_VERSION="+version, "DEB_OUT="+out)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "metalhall_"+version+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v, want one metalhall_%s_ARCH.deb", debs, version)
	}
	deb := debs[0]

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) {
		t.Helper()
		full := []string{"--root=" + root, "--log=/dev/null"}
		if os.Getuid() != 0 {
			full = append(full, "--force-not-root")
		}
		if b, err := exec.Command("dpkg", append(full, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	dpkg("-i", deb)

	for _, f := range []string{
		"usr/bin/metalhall",
		"lib/systemd/system/metalhall.service",
		"etc/metalhall/metalhall.yaml",
		"usr/share/man/man1/metalhall.1.gz",
		"usr/share/man/man1/metalhall-serve.1.gz",
		"usr/share/bash-completion/completions/metalhall",
		"usr/share/zsh/vendor-completions/_metalhall",
		"usr/share/fish/vendor_completions.d/metalhall.fish",
		"usr/share/doc/metalhall/cli-reference.md",
	} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("the package installed no /%s: %v", f, err)
		}
	}

	// The installed binary, run inside the root when this test may
	// chroot (it is static: the root holds nothing else), from outside
	// otherwise.
	bin := filepath.Join(root, "usr/bin/metalhall")
	installed := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		if os.Getuid() == 0 {
			cmd = exec.Command("/usr/bin/metalhall", args...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
			cmd.Dir = "/"
		}
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("installed metalhall %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	if v := installed("--version"); !strings.Contains(v, version) {
		t.Errorf("metalhall --version: %q, want %s", v, version)
	}
	if h := installed("serve", "--help"); !strings.Contains(h, "--data-dir") || !strings.Contains(h, "--config") {
		t.Errorf("metalhall serve --help:\n%s", h)
	}
	if s := installed("completion", "bash"); !strings.Contains(s, "complete -o bashdefault") {
		t.Errorf("metalhall completion bash:\n%s", s)
	}

	serveWithInstalledConfig(t, bin, filepath.Join(root, "etc/metalhall/metalhall.yaml"))

	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		verifyUnit(t, root)
	} else {
		t.Log("systemd-analyze is not installed: the unit was not verified")
	}

	dpkg("--remove", "metalhall")
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("dpkg --remove left /usr/bin/metalhall: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/metalhall/metalhall.yaml")); err != nil {
		t.Errorf("dpkg --remove took the configuration (a conffile stays until purge): %v", err)
	}
	dpkg("--purge", "metalhall")
	if _, err := os.Stat(filepath.Join(root, "etc/metalhall/metalhall.yaml")); !os.IsNotExist(err) {
		t.Errorf("dpkg --purge left the configuration: %v", err)
	}
}

// serveWithInstalledConfig starts the installed binary as the unit does,
// on the installed configuration (only the data dir and the addresses
// moved to the test's own), plays systemd's side of Type=notify, and
// stops it with SIGTERM as systemctl stop does.
func serveWithInstalledConfig(t *testing.T, bin, config string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(bin, "serve", "--config", config, "--data-dir", t.TempDir(),
		"--listen", "127.0.0.1:0", "--provision-listen", "127.0.0.1:0", "--power-sync-interval", "0")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// A guard against a hang, not a timing: READY=1 comes, or serve
	// exits and the test says why.
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		ln.SetReadDeadline(time.Now().Add(2 * time.Minute))
		n, _ := ln.Read(buf)
		got <- string(buf[:n])
	}()
	select {
	case msg := <-got:
		if !strings.Contains(msg, "READY=1") {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("serve on the installed configuration never said READY=1 (%q):\n%s", msg, logs.String())
		}
	case err := <-exited:
		t.Fatalf("serve on the installed configuration exited: %v\n%s", err, logs.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, logs.String())
	}
	// The configuration asks for JSON logs, for journald.
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.HasPrefix(l, "{") {
			t.Errorf("a log line that is not JSON: %q", l)
		}
	}
}

// verifyUnit runs systemd-analyze verify on the installed unit. The host
// has no /usr/bin/metalhall, so the copy checked runs the installed one;
// nothing else of the unit changes. Any message is a finding: verify
// exits 0 on unknown keys, and only says so.
func verifyUnit(t *testing.T, root string) {
	t.Helper()
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/metalhall.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	checked := filepath.Join(dir, "metalhall.service")
	text := strings.ReplaceAll(string(unit), "ExecStart=/usr/bin/metalhall ", "ExecStart="+filepath.Join(root, "usr/bin/metalhall")+" ")
	if err := os.WriteFile(checked, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command("systemd-analyze", "verify", "--man=no", checked).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(b)) > 0 {
		t.Errorf("systemd-analyze verify metalhall.service: %v\n%s", err, b)
	}
}
