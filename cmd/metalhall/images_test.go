package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestImageImportListShowDelete(t *testing.T) {
	url, tok := startService(t)
	c := cliRunner{t, url, tok}
	dir := t.TempDir()
	// A 4 MiB raw image, half zeros, and the same compressed with zstd.
	raw := bytes.Repeat([]byte{0}, 4<<20)
	copy(raw, bytes.Repeat([]byte("metalhall"), 200_000))
	rawPath := filepath.Join(dir, "demo.raw")
	os.WriteFile(rawPath, raw, 0o600)
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(raw)
	zw.Close()
	zPath := filepath.Join(dir, "demo.raw.zst")
	os.WriteFile(zPath, zbuf.Bytes(), 0o600)
	sum := sha256.Sum256(raw)

	out := c.ok("image", "import", "--file", rawPath, "--sha256", hex.EncodeToString(sum[:]), "demo")
	if !strings.Contains(out, "image demo imported: raw") {
		t.Fatalf("import: %s", out)
	}
	var img struct {
		Format             string `json:"format"`
		UncompressedSHA256 string `json:"uncompressed_sha256"`
		MappedBytes        int64  `json:"mapped_bytes"`
	}
	json.Unmarshal([]byte(c.ok("image", "import", "-o", "json", "--file", zPath, "--format", "raw.zst", "demo-zst")), &img)
	if img.Format != "raw.zst" || img.UncompressedSHA256 != hex.EncodeToString(sum[:]) || img.MappedBytes >= 4<<20 || img.MappedBytes < 1_800_000 {
		t.Fatalf("zstd import: %+v", img)
	}
	// A wrong checksum says both values and leaves nothing behind.
	code, _, errs := c.run("image", "import", "--file", rawPath, "--sha256", strings.Repeat("0", 64), "bad")
	if code != exitUsage || !strings.Contains(errs, "checksum mismatch") || !strings.Contains(errs, hex.EncodeToString(sum[:])) {
		t.Fatalf("bad checksum: %d %s", code, errs)
	}
	if list := c.ok("image", "list"); !strings.Contains(list, "demo-zst") || strings.Contains(list, "bad") {
		t.Fatalf("list:\n%s", list)
	}
	if show := c.ok("image", "show", "demo"); !strings.Contains(show, "used by:") || !strings.Contains(show, "4.0 MiB") {
		t.Fatalf("show:\n%s", show)
	}
	c.ok("image", "delete", "demo")
	if code, _, _ := c.run("image", "show", "demo"); code != exitNotFound {
		t.Fatalf("deleted image still shown: %d", code)
	}
}

func TestStaffNameATenantsImageWithTenantOrRef(t *testing.T) {
	url, tok := startService(t)
	admin := cliRunner{t, url, tok}
	img := filepath.Join(t.TempDir(), "golden.raw")
	os.WriteFile(img, bytes.Repeat([]byte("golden"), 1000), 0o600)
	for _, tn := range []string{"bank-x", "telco-y"} {
		admin.ok("tenant", "create", tn)
		var tt struct{ Token string }
		json.Unmarshal([]byte(admin.ok("token", "create", "--role", "tenant", "--tenant", tn, "-o", "json")), &tt)
		// Each tenant imports the same name; neither hears of the other.
		cliRunner{t, url, tt.Token}.ok("image", "import", "--file", img, "golden")
	}
	var shown struct{ Tenant, Ref string }
	json.Unmarshal([]byte(admin.ok("image", "show", "--tenant", "bank-x", "-o", "json", "golden")), &shown)
	if shown.Tenant != "bank-x" || shown.Ref != "bank-x/golden" {
		t.Fatalf("image show --tenant bank-x golden: %+v", shown)
	}
	json.Unmarshal([]byte(admin.ok("image", "show", "-o", "json", "telco-y/golden")), &shown)
	if shown.Tenant != "telco-y" {
		t.Fatalf("image show telco-y/golden: %+v", shown)
	}
	if code, _, errs := admin.run("image", "show", "golden"); code != exitConflict || !strings.Contains(errs, "bank-x/golden") {
		t.Fatalf("image show of a name two tenants use: %d %s, want a conflict naming the refs", code, errs)
	}
	if code, _, errs := admin.run("image", "show", "--tenant", "bank-x", "telco-y/golden"); code != exitUsage {
		t.Fatalf("--tenant with a ref: %d %s", code, errs)
	}
	admin.ok("image", "delete", "--tenant", "bank-x", "golden")
	json.Unmarshal([]byte(admin.ok("image", "show", "-o", "json", "golden")), &shown)
	if shown.Ref != "telco-y/golden" {
		t.Fatalf("the bare name after bank-x's is gone: %+v", shown)
	}
}
