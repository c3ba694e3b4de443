package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad power settings are refused before serve creates anything.
func TestServeRefusesBadPowerSettingsAndChangesNothing(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--power-alert-share", "1.5"}, "--power-alert-share 1.5: give a share of a rack's budget above 0 and at most 1"},
		{[]string{"--power-alert-share", "-0.1"}, "--power-alert-share -0.1"},
		{[]string{"--energise-wait", "0s"}, "--energise-wait must be positive"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		var out bytes.Buffer
		args := append([]string{"metalhall", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0"}, c.args...)
		if code := run(context.Background(), args, &out, &out); code != exitUsage {
			t.Fatalf("%v: exit %d, want %d (usage)", c.args, code, exitUsage)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("%v: %q does not say %q", c.args, out.String(), c.want)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%v: the data dir was created", c.args)
		}
	}
}
