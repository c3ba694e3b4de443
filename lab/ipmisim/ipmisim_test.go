package ipmisim

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ipmitool(t *testing.T, s *Sim, pass string, args ...string) (string, error) {
	t.Helper()
	a := append([]string{"-I", "lanplus", "-H", s.Host(), "-p", strings.TrimPrefix(s.Addr(), s.Host()+":"), "-U", s.User(), "-E", "-C", "3", "-N", "1", "-R", "2"}, args...)
	cmd := exec.Command("ipmitool", a...)
	cmd.Env = []string{"IPMITOOL_PASSWORD=" + pass}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestSimPowerAndBoot(t *testing.T) {
	s := ForTest(t, Config{User: "metal", Password: "hall-pw"})
	if on, err := s.Power(); err != nil || on {
		t.Fatalf("initial power = %v, %v; want off", on, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"chassis", "power", "on"}, "Up/On"},
		{[]string{"chassis", "power", "status"}, "Chassis Power is on"},
		{[]string{"chassis", "bootdev", "pxe"}, "Set Boot Device to pxe"},
	} {
		out, err := ipmitool(t, s, "hall-pw", c.args...)
		if err != nil || !strings.Contains(out, c.want) {
			t.Fatalf("ipmitool %v: %v: %s", c.args, err, out)
		}
	}
	if on, _ := s.Power(); !on {
		t.Fatal("power file not on after power on")
	}
	if b, _ := s.Boot(); b != "pxe" {
		t.Fatalf("boot = %q, want pxe", b)
	}
	out, err := ipmitool(t, s, "bad-pw", "chassis", "power", "status")
	if err == nil {
		t.Fatalf("wrong password accepted: %s", out)
	}
}

func TestSimHook(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$1=$2\" >> hook.out\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := ForTest(t, Config{Hook: hook})
	if out, err := ipmitool(t, s, "admin", "chassis", "power", "on"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ = os.ReadFile(filepath.Join(s.Dir(), "hook.out"))
		if strings.Contains(string(b), "power=1") {
			return
		}
	}
	t.Fatalf("hook not run: %q; chassis log %q", b, s.ChassisLog())
}

func TestStopRemovesOwnDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ipmi_sim")
	}
	if err := Available(); err != nil {
		t.Skip(err)
	}
	s, err := Start(t.Context(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir %s still there after Stop: %v", dir, err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal("second Stop:", err)
	}
}
