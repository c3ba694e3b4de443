package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
)

func dirtyDisk(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, bytes.Repeat([]byte("metalhall"), size/9+1)[:size], 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWipeFast(t *testing.T) {
	p := dirtyDisk(t, 8*MiB+512)
	res, err := Wipe(context.Background(), p, wire.WipeFast, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != 8*MiB+512 || res.Zeroed != 2*MiB || !res.Discarded {
		t.Errorf("result %+v", res)
	}
	b, _ := os.ReadFile(p)
	if len(b) != 8*MiB+512 {
		t.Fatalf("size changed to %d", len(b))
	}
	// On a file the "discard" punches a hole over everything.
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Error("disk not all zeros after a fast wipe of a file")
	}
}

func TestWipeFastSmall(t *testing.T) {
	p := dirtyDisk(t, 4096) // smaller than the 1 MiB edges
	res, err := Wipe(context.Background(), p, wire.WipeFast, nil)
	if err != nil || res.Zeroed != 4096 {
		t.Fatalf("res %+v err %v", res, err)
	}
}

func TestWipeFull(t *testing.T) {
	p := dirtyDisk(t, 9*MiB)
	var last wire.Progress
	res, err := Wipe(context.Background(), p, wire.WipeFull, func(pr wire.Progress) { last = pr })
	if err != nil {
		t.Fatal(err)
	}
	if res.Zeroed != 9*MiB {
		t.Errorf("zeroed %d", res.Zeroed)
	}
	b, _ := os.ReadFile(p)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Error("not all zeros")
	}
	if a := allocated(t, p); a < 9*MiB {
		t.Errorf("full wipe left holes: %d bytes allocated", a)
	}
	if last.Step != wire.StepVerify || last.Bytes != 9*MiB {
		t.Errorf("last progress %+v", last)
	}
}

func TestWipeBadMode(t *testing.T) {
	if _, err := Wipe(context.Background(), dirtyDisk(t, 10), "slow", nil); err == nil {
		t.Fatal("no error for an unknown mode")
	}
}
