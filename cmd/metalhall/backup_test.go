package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBackupNeverOverwritesSilently(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	out := filepath.Join(t.TempDir(), "metalhall.db")
	if msg := r.ok("backup", "--out", out); !strings.Contains(msg, "seal.key") {
		t.Errorf("backup does not say what else to keep: %q", msg)
	}
	first, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	r.ok("site", "create", "riyadh-1") // the next backup differs
	code, stdout, errs := r.run("backup", "--out", out)
	if code != exitUsage || !strings.Contains(errs, "--force") || stdout != "" {
		t.Fatalf("backup onto an existing file: exit %d %q %q", code, stdout, errs)
	}
	if now, _ := os.ReadFile(out); !bytes.Equal(now, first) {
		t.Fatal("a refused backup changed the file")
	}
	r.ok("backup", "--out", out, "--force")
	if now, _ := os.ReadFile(out); bytes.Equal(now, first) {
		t.Error("backup --force did not replace the file")
	}
}
