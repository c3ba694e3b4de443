package bootenv

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
)

// TestQEMUCertifiedEraseNVMeAndVirtio erases a VM with an emulated NVMe
// disk and a virtio disk, both full of old data, and checks each disk's
// erase record and the bytes left on the host files.
//
// What QEMU 7.2's NVMe controller (Debian 12) offers, as the agent's
// Identify Controller sees it, is in docs/erase.md; the expectations
// below follow it.
func TestQEMUCertifiedEraseNVMeAndVirtio(t *testing.T) {
	needQEMU(t)
	dir := t.TempDir()
	virtio := filepath.Join(dir, "virtio.raw")
	nvme := filepath.Join(dir, "nvme.raw")
	for _, p := range []string{virtio, nvme} {
		if err := os.WriteFile(p, bytes.Repeat([]byte{0xEE}, 32<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, _, done := vmTask(t, wire.Task{JobID: "erase", Kind: wire.KindWipe, WipeMode: wire.WipeCertified}, nil, virtio,
		"-drive", "file="+nvme+",format=raw,if=none,id=nv0,cache=unsafe",
		"-device", "nvme,serial=MHNVME0001,drive=nv0")
	js, _ := json.MarshalIndent(done.Erase, "", "  ")
	t.Logf("erase records:\n%s", js)
	recs := map[string]wire.EraseRecord{}
	for _, r := range done.Erase {
		recs[r.Disk] = r
	}
	if len(recs) != 2 {
		t.Fatalf("want records for nvme0n1 and vda, got %d", len(done.Erase))
	}
	nv, vd := recs["nvme0n1"], recs["vda"]
	if nv.Serial != "MHNVME0001" || nv.Model != "QEMU NVMe Ctrl" || nv.SizeBytes != 32<<20 {
		t.Errorf("nvme identity: %+v", nv)
	}
	if nv.Method != wire.EraseNVMeFormatUserData || nv.Level != wire.LevelPurge || nv.Result != wire.ErasePassed {
		t.Errorf("nvme: method %s level %s result %s, want %s purge passed", nv.Method, nv.Level, nv.Result, wire.EraseNVMeFormatUserData)
	}
	if vd.Method != wire.EraseOverwrite || vd.Level != wire.LevelClear || vd.Result != wire.ErasePassed || !vd.Verification.FullReadBack {
		t.Errorf("virtio: %+v", vd)
	}
	for _, r := range []wire.EraseRecord{nv, vd} {
		if v := r.Verification; v.Samples < 64 || v.Canary != 0 {
			t.Errorf("%s verification: %+v", r.Disk, v)
		}
	}
	for _, p := range []string{virtio, nvme} {
		b, _ := os.ReadFile(p)
		if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Errorf("%s: byte %d is not zero after the erase", filepath.Base(p), i)
		}
	}
}
