package bootenv

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
)

// TestQEMUCertifiedEraseNVMeAndVirtio erases a VM with an emulated NVMe
// disk, a virtio disk and a SATA disk on AHCI, all full of old data, and checks each disk's
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
	sata := filepath.Join(dir, "sata.raw")
	for _, p := range []string{virtio, nvme, sata} {
		if err := os.WriteFile(p, bytes.Repeat([]byte{0xEE}, 32<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	console, _, done := vmTask(t, wire.Task{JobID: "erase", Kind: wire.KindWipe, WipeMode: wire.WipeCertified}, nil, virtio,
		"-drive", "file="+nvme+",format=raw,if=none,id=nv0,cache=unsafe",
		"-device", "nvme,serial=MHNVME0001,drive=nv0",
		"-device", "ahci,id=ahci0",
		"-drive", "file="+sata+",format=raw,if=none,id=sata0,cache=unsafe",
		"-device", "ide-hd,drive=sata0,bus=ahci0.0,serial=MHSATA0001")
	js, _ := json.MarshalIndent(done.Erase, "", "  ")
	t.Logf("erase records:\n%s", js)
	recs := map[string]wire.EraseRecord{}
	for _, r := range done.Erase {
		recs[r.Disk] = r
	}
	if len(recs) != 3 {
		t.Fatalf("want records for nvme0n1, sda and vda, got %d", len(done.Erase))
	}
	nv, vd, sd := recs["nvme0n1"], recs["vda"], recs["sda"]
	if nv.Serial != "MHNVME0001" || nv.Model != "QEMU NVMe Ctrl" || nv.SizeBytes != 32<<20 {
		t.Errorf("nvme identity: %+v", nv)
	}
	if nv.Method != wire.EraseNVMeFormatUserData || nv.Level != wire.LevelPurge || nv.Result != wire.ErasePassed {
		t.Errorf("nvme: method %s level %s result %s, want %s purge passed", nv.Method, nv.Level, nv.Result, wire.EraseNVMeFormatUserData)
	}
	if vd.Method != wire.EraseOverwrite || vd.Level != wire.LevelClear || vd.Result != wire.ErasePassed || !vd.Verification.FullReadBack {
		t.Errorf("virtio: %+v", vd)
	}
	// What the agent's own Identify commands read (docs/erase.md).
	for _, want := range []string{
		`nvme identify disk=/dev/nvme0n1 model="QEMU NVMe Ctrl" serial=MHNVME0001 format=true format_crypto=false sanitize_crypto=false sanitize_block=false`,
		`ata identify disk=/dev/sda model="QEMU HARDDISK" serial=MHSATA0001 security=false`,
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	// QEMU's AHCI disk answers IDENTIFY DEVICE through SG_IO (libata's
	// ATA PASS-THROUGH) without the Security feature set: overwrite.
	if sd.Serial != "MHSATA0001" || sd.Model != "QEMU HARDDISK" || sd.Method != wire.EraseOverwrite || sd.Result != wire.ErasePassed ||
		!slices.Contains(sd.Attempts, "ata secure erase: the disk has no ATA Security feature set") {
		t.Errorf("sata: %+v", sd)
	}
	for _, r := range []wire.EraseRecord{nv, vd, sd} {
		if v := r.Verification; v.Samples < 64 || v.Canary != 0 {
			t.Errorf("%s verification: %+v", r.Disk, v)
		}
	}
	for _, p := range []string{virtio, nvme, sata} {
		b, _ := os.ReadFile(p)
		if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Errorf("%s: byte %d is not zero after the erase", filepath.Base(p), i)
		}
	}
}
