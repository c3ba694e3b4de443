package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/metalhall/metalhall/agent/wire"
)

func TestPlanEraseStrongestFirstOverwriteLast(t *testing.T) {
	for _, tc := range []struct {
		name string
		caps *nvmeCaps
		want []wire.EraseMethod
	}{
		{"not NVMe", nil, []wire.EraseMethod{wire.EraseOverwrite}},
		{"NVMe without format or sanitize", &nvmeCaps{}, []wire.EraseMethod{wire.EraseOverwrite}},
		{"format, no crypto", &nvmeCaps{Format: true},
			[]wire.EraseMethod{wire.EraseNVMeFormatUserData, wire.EraseOverwrite}},
		{"format with crypto", &nvmeCaps{Format: true, FormatCrypto: true},
			[]wire.EraseMethod{wire.EraseNVMeFormatCrypto, wire.EraseNVMeFormatUserData, wire.EraseOverwrite}},
		{"everything", &nvmeCaps{Format: true, FormatCrypto: true, SanitizeCrypto: true, SanitizeBlock: true, SanitizeOverwrite: true},
			[]wire.EraseMethod{wire.EraseNVMeSanitizeCrypto, wire.EraseNVMeSanitizeBlock, wire.EraseNVMeFormatCrypto, wire.EraseNVMeFormatUserData, wire.EraseOverwrite}},
		{"block sanitize only", &nvmeCaps{SanitizeBlock: true},
			[]wire.EraseMethod{wire.EraseNVMeSanitizeBlock, wire.EraseOverwrite}},
	} {
		if got := planErase(tc.caps, nil); !slices.Equal(got, tc.want) {
			t.Errorf("%s: plan %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPlanEraseUsesATASecureEraseOnlyWhenUsable(t *testing.T) {
	for _, tc := range []struct {
		name string
		caps ataCaps
		want []wire.EraseMethod
	}{
		{"no security feature set", ataCaps{}, []wire.EraseMethod{wire.EraseOverwrite}},
		{"normal only", ataCaps{Security: true}, []wire.EraseMethod{wire.EraseATASecure, wire.EraseOverwrite}},
		{"enhanced", ataCaps{Security: true, Enhanced: true},
			[]wire.EraseMethod{wire.EraseATASecureEnhanced, wire.EraseATASecure, wire.EraseOverwrite}},
		{"frozen by the BIOS", ataCaps{Security: true, Enhanced: true, Frozen: true}, []wire.EraseMethod{wire.EraseOverwrite}},
		{"someone else's password", ataCaps{Security: true, Enabled: true}, []wire.EraseMethod{wire.EraseOverwrite}},
		{"locked", ataCaps{Security: true, Enabled: true, Locked: true}, []wire.EraseMethod{wire.EraseOverwrite}},
	} {
		if got := planErase(nil, &tc.caps); !slices.Equal(got, tc.want) {
			t.Errorf("%s: plan %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestATAIdentifyParsesSecurityState(t *testing.T) {
	b := make([]byte, 512)
	put := func(word int, v uint16) { binary.LittleEndian.PutUint16(b[2*word:], v) }
	swapped := func(s string, n int) []byte { // IDENTIFY strings: high byte first
		p := []byte(s + strings.Repeat(" ", n-len(s)))
		for i := 0; i+1 < len(p); i += 2 {
			p[i], p[i+1] = p[i+1], p[i]
		}
		return p
	}
	copy(b[20:40], swapped("WD-WX12345", 20))
	copy(b[54:94], swapped("WDC WD40EFRX-68N32N0", 40))
	put(82, 1<<1|1<<14)
	put(128, 1|1<<3|1<<5) // supported, frozen, enhanced
	put(89, 60)           // 120 min
	put(90, 0x8000|300)   // extended format: 600 min
	c, err := parseATAIdentify(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Model != "WDC WD40EFRX-68N32N0" || c.Serial != "WD-WX12345" || !c.Security || !c.Frozen || !c.Enhanced || c.Enabled ||
		c.EraseTime != 120*time.Minute || c.EnhancedTime != 600*time.Minute {
		t.Errorf("caps %+v", c)
	}
	if why := c.ataUsable(); !strings.Contains(why, "frozen") {
		t.Errorf("frozen disk usable: %q", why)
	}
	put(82, 0xFFFF) // a device that answers all ones has no feature sets
	if c, _ := parseATAIdentify(b); c.Security {
		t.Error("all-ones word 82 read as security supported")
	}
}

// The ioctl structures must match the kernel's layout byte for byte.
func TestIoctlStructSizes(t *testing.T) {
	if s := unsafe.Sizeof(nvmePassthru{}); s != 72 {
		t.Errorf("nvme_passthru_cmd is %d bytes, want 72", s)
	}
	if s := unsafe.Sizeof(sgIOHdr{}); s != 88 {
		t.Errorf("sg_io_hdr is %d bytes, want 88", s)
	}
	if o := unsafe.Offsetof(sgIOHdr{}.UsrPtr); o != 56 {
		t.Errorf("sg_io_hdr.usr_ptr at %d, want 56", o)
	}
	if o := unsafe.Offsetof(sgIOHdr{}.Status); o != 64 {
		t.Errorf("sg_io_hdr.status at %d, want 64", o)
	}
}

func TestSenseDescriptorGivesTheATAStatus(t *testing.T) {
	// Descriptor sense, key 0, "ATA pass-through information available",
	// with an ATA Status Return descriptor: error 0x04 (abort), status 0x51.
	s := []byte{0x72, 0x00, 0x00, 0x1D, 0, 0, 0, 14, 0x09, 0x0C, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x51}
	var ae ataError
	parseSense(s, &ae)
	if ae.ASCQ != 0x1D || ae.Errb != 0x04 || ae.ATAStatus != 0x51 {
		t.Errorf("parsed %+v", ae)
	}
}

func TestMethodLevelsFollowSP80088(t *testing.T) {
	for m, want := range map[wire.EraseMethod]wire.EraseLevel{
		wire.EraseNVMeSanitizeCrypto: wire.LevelPurge, wire.EraseNVMeSanitizeBlock: wire.LevelPurge,
		wire.EraseNVMeFormatCrypto: wire.LevelPurge, wire.EraseNVMeFormatUserData: wire.LevelPurge,
		wire.EraseATASecureEnhanced: wire.LevelPurge, wire.EraseATASecure: wire.LevelPurge,
		wire.EraseOverwrite: wire.LevelClear, wire.EraseFast: wire.LevelNone,
	} {
		if got := methodLevel(m); got != want {
			t.Errorf("%s: level %s, want %s", m, got, want)
		}
	}
}

func TestIdentifyControllerParsesEraseCapabilities(t *testing.T) {
	b := make([]byte, 4096)
	copy(b[4:24], "SN-0001             ")
	copy(b[24:64], "QEMU NVMe Ctrl                          ")
	copy(b[64:72], "7.2.0   ")
	binary.LittleEndian.PutUint16(b[256:], 1<<1|1<<3) // OACS: format, ns management
	binary.LittleEndian.PutUint32(b[328:], 1<<0|1<<1) // SANICAP: crypto, block
	b[524] = 1 << 2                                   // FNA: crypto erase
	var c nvmeCaps
	if err := parseIdentifyController(b, &c); err != nil {
		t.Fatal(err)
	}
	want := nvmeCaps{Model: "QEMU NVMe Ctrl", Serial: "SN-0001", Firmware: "7.2.0", Format: true, FormatCrypto: true, SanitizeCrypto: true, SanitizeBlock: true}
	if c != want {
		t.Errorf("caps %+v, want %+v", c, want)
	}
	b[256] = 0 // no Format NVM: FNA's crypto bit means nothing
	c = nvmeCaps{}
	parseIdentifyController(b, &c)
	if c.Format || c.FormatCrypto {
		t.Errorf("format without OACS bit 1: %+v", c)
	}
	if err := parseIdentifyController(b[:100], &c); err == nil {
		t.Error("a short identify buffer was accepted")
	}
}

func TestFormatKeepsTheNamespaceFormat(t *testing.T) {
	// LBA format 0x13 (low 3, high 1), extended metadata, PI type 1 first.
	c := nvmeCaps{FLBAS: 0x3 | 1<<4 | 1<<5, DPS: 1 | 1<<3}
	got := formatCDW10(c, sesCrypto)
	want := uint32(0x3 | 1<<4 | 1<<5 | 1<<8 | 2<<9 | 1<<12)
	if got != want {
		t.Errorf("cdw10 %#x, want %#x", got, want)
	}
	if got := formatCDW10(nvmeCaps{}, sesUserData); got != 1<<9 {
		t.Errorf("plain format cdw10 %#x", got)
	}
}

func TestSanitizeStatusParse(t *testing.T) {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint16(b[0:], 32768)
	binary.LittleEndian.PutUint16(b[2:], sstatInProgress|3<<3)
	st, err := parseSanitizeStatus(b)
	if err != nil || st.Progress != 32768 || st.Status != sstatInProgress {
		t.Errorf("status %+v %v", st, err)
	}
}

func TestSampleOffsetsSpreadAlignedAndCoverBothEnds(t *testing.T) {
	size := int64(64*MiB + 512) // not a multiple of the sample size
	offs := sampleOffsets(size, 64)
	if len(offs) != 64 || offs[0] != 0 || offs[63] != 64*MiB-sampleSize {
		t.Fatalf("%d offsets, first %d last %d", len(offs), offs[0], offs[len(offs)-1])
	}
	for i, o := range offs {
		if o%sampleSize != 0 || o+sampleSize > size || (i > 0 && o <= offs[i-1]) {
			t.Fatalf("offset %d = %d: not aligned, past the end or not ascending", i, o)
		}
	}
	if got := sampleOffsets(3*sampleSize, 64); len(got) != 3 {
		t.Errorf("small disk: %v", got)
	}
	if got := sampleOffsets(100, 64); got != nil {
		t.Errorf("disk smaller than a block: %v", got)
	}
}

// TestCanariesCatchAnEraseThatDidNothing is the verification's reason to
// exist: a drive that acknowledges an erase and keeps the data is caught.
func TestCanariesCatchAnEraseThatDidNothing(t *testing.T) {
	p := dirtyDisk(t, 4*MiB)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	offs := sampleOffsets(4*MiB, 16)
	if err := writeCanaries(f, "n1", offs); err != nil {
		t.Fatal(err)
	}
	v, err := checkCanaries(f, "n1", offs)
	if err != nil || v.Canary != 16 || v.Zero != 0 {
		t.Fatalf("no erase: %+v %v", v, err)
	}
	// A partial erase: half the samples zeroed, one overwritten with junk.
	for _, o := range offs[:8] {
		f.WriteAt(make([]byte, sampleSize), o)
	}
	f.WriteAt(bytes.Repeat([]byte{0x5A}, sampleSize), offs[8])
	v, _ = checkCanaries(f, "n1", offs)
	if v.Canary != 7 || v.Zero != 8 || v.Other != 1 {
		t.Errorf("partial erase: %+v", v)
	}
	// Another erase's canary (other nonce) is not this one's.
	if v, _ := checkCanaries(f, "n2", offs); v.Canary != 0 {
		t.Errorf("a stale canary counted: %+v", v)
	}
}

// TestEraseFileOverwritesVerifiesAndRecords: a disk that is not NVMe
// (here a file) is overwritten, every byte is read back, no canary is
// left, and the record says so at level clear.
func TestEraseFileOverwritesVerifiesAndRecords(t *testing.T) {
	p := dirtyDisk(t, 5*MiB+4096)
	rec, err := Erase(context.Background(), EraseOptions{Disk: wire.Disk{Name: "vda", Model: "virtio", Serial: "S1"}, Path: p, Mode: wire.WipeCertified, Samples: 32})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Method != wire.EraseOverwrite || rec.Level != wire.LevelClear || rec.Result != wire.ErasePassed ||
		rec.SizeBytes != 5*MiB+4096 || rec.Model != "virtio" || rec.Serial != "S1" || rec.Disk != "vda" {
		t.Errorf("record %+v", rec)
	}
	v := rec.Verification
	if v.Samples != 32 || v.Canary != 0 || v.Zero != 32 || !v.FullReadBack || !strings.Contains(v.Summary, "0 still hold the canary") {
		t.Errorf("verification %+v", v)
	}
	if rec.Started.IsZero() || rec.Ended.Before(rec.Started) {
		t.Errorf("times %v %v", rec.Started, rec.Ended)
	}
	b, _ := os.ReadFile(p)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Error("file not all zeros")
	}
}

func TestEraseFastIsRecordedAsNotSanitized(t *testing.T) {
	p := dirtyDisk(t, 4*MiB)
	rec, err := Erase(context.Background(), EraseOptions{Disk: wire.Disk{Name: "vda"}, Path: p, Mode: wire.WipeFast})
	if err != nil || rec.Method != wire.EraseFast || rec.Level != wire.LevelNone || rec.Result != wire.ErasePassed {
		t.Errorf("record %+v err %v", rec, err)
	}
}

func TestEraseFailureIsRecorded(t *testing.T) {
	rec, err := Erase(context.Background(), EraseOptions{Disk: wire.Disk{Name: "vdz"}, Path: filepath.Join(t.TempDir(), "missing")})
	if err == nil || rec.Result != wire.EraseFailed || !strings.Contains(rec.Error, "no such file") {
		t.Errorf("record %+v err %v", rec, err)
	}
	p := dirtyDisk(t, 4096)
	if _, err := Erase(context.Background(), EraseOptions{Path: p, Mode: "gentle"}); err == nil || !strings.Contains(err.Error(), "want certified") {
		t.Errorf("bad mode: %v", err)
	}
	if b, _ := os.ReadFile(p); bytes.Equal(b, make([]byte, len(b))) {
		t.Error("a bad mode changed the disk")
	}
}
