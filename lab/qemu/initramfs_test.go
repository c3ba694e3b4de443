package qemu

import (
	"bytes"
	"compress/gzip"
	"io"
	"os/exec"
	"strings"
	"testing"
)

func TestWriteInitramfsReadByCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("skipping: cpio not installed")
	}
	var buf bytes.Buffer
	err = WriteInitramfs(&buf, []File{
		{Path: "init", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")},
		{Path: "dev", Dir: true, Mode: 0o755},
		{Path: "dev/console", Mode: 0o600, Dev: &[2]uint32{5, 1}},
		{Path: "odd", Mode: 0o644, Data: []byte("abc")},
	})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	cmd := exec.Command(cpio, "-t", "-v")
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	for _, want := range []string{"-rwxr-xr-x", " init", "drwxr-xr-x", " dev", "crw-------", "dev/console", " odd"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, out)
		}
	}
}
