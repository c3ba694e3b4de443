package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad image settings are refused before serve creates anything.
func TestServeRefusesBadImageSettingsAndChangesNothing(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--image-url-allow", "http://mirror.example.net"}, "is a URL"},
		{[]string{"--image-url-allow", "mirror.example.net:8080"}, "neither a CIDR"},
		{[]string{"--image-url-allow", "10.0.0.0/33"}, "not a CIDR"},
		{[]string{"--image-max-size-gib", "0"}, "must be positive"},
		{[]string{"--image-imports", "-1"}, "must be positive"},
		{[]string{"--image-tenant-quota-gib", "0"}, "-1 (no quota)"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		var out bytes.Buffer
		args := append([]string{"metalhall", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0"}, c.args...)
		if code := run(context.Background(), args, &out, &out); code == 0 {
			t.Fatalf("%v: exit 0", c.args)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("%v: %q does not say %q", c.args, out.String(), c.want)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%v: the data dir was created", c.args)
		}
	}
}
