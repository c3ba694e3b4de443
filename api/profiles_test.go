package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestAManifestNamingAnUnknownProfileIsRefusedAtItsLine(t *testing.T) {
	f := newFixture(t)
	manifest := manifestYAML + "    profile: hgx-h100\n  - name: gpu-rnew-02\n    unit: 9\n    height: 8\n    macs: [\"52:54:00:aa:00:02\"]\n" +
		"    bmc: {address: 10.9.0.2, protocol: redfish, user: root, password: hunter2}\n    power_w: 10200\n    profile: hgx-h10O\n"
	status, body := f.do("admin", "POST", "/api/v1/racks/import", manifest)
	if status != http.StatusBadRequest || !strings.Contains(string(body), `manifest line 15, machine 2 \"gpu-rnew-02\": profile \"hgx-h10O\" is not defined`) ||
		!strings.Contains(string(body), "metalhall profile import") {
		t.Fatalf("import naming a missing profile: %d %s", status, body)
	}
	if _, err := f.inv.Rack(t.Context(), "rnew"); err == nil {
		t.Fatal("the refused manifest created its rack")
	}
	fixed := strings.Replace(manifest, "hgx-h10O", "hgx-h100", 1)
	if status, body := f.do("admin", "POST", "/api/v1/racks/import", fixed); status != http.StatusOK {
		t.Fatalf("import naming a profile that exists: %d %s", status, body)
	}
}

func TestProfilesAreCheckedBeforeTheyAreStoredAndKeptWhileNamed(t *testing.T) {
	f := newFixture(t)
	status, body := f.do("admin", "PUT", "/api/v1/profiles/hgx-b200", "gpu_model: B200\ngpu_count: 8\n")
	if status != http.StatusBadRequest || !strings.Contains(string(body), "line 2") || !strings.Contains(string(body), "os_disk is not set") {
		t.Fatalf("GPU profile without os_disk: %d %s", status, body)
	}
	if status, _ := f.do("admin", "GET", "/api/v1/profiles/hgx-b200", nil); status != http.StatusNotFound {
		t.Fatalf("a refused profile was stored: %d", status)
	}
	if status, body := f.do("technician", "POST", "/api/v1/profiles/validate?name=x", "gpu_count: 8\nos_dsik: sda\n"); status != http.StatusBadRequest || !strings.Contains(string(body), "os_dsik") {
		t.Fatalf("validate with a typo: %d %s", status, body)
	}

	profile := "hgx-h100"
	if status, body := f.do("admin", "PATCH", "/api/v1/machines/ma", MachineUpdate{Profile: &profile}); status != http.StatusOK {
		t.Fatalf("give ma the profile: %d %s", status, body)
	}
	status, body = f.do("admin", "DELETE", "/api/v1/profiles/hgx-h100", nil)
	if status != http.StatusConflict || !strings.Contains(string(body), "profile hgx-h100 is still named by 1 machine: ma") {
		t.Fatalf("delete of a profile in use: %d %s", status, body)
	}
	status, body = f.do("admin", "GET", "/api/v1/profiles", nil)
	var list []ProfileSummary
	if status != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list) != 2 || list[0].Name != "hgx-h100" || list[0].Machines != 1 || list[0].OSDisk != "nvme0n1" {
		t.Fatalf("profile list: %d %s", status, body)
	}
}

func TestEnrolAndUpdateRefuseAnUnknownProfileAsImportDoes(t *testing.T) {
	f := newFixture(t)
	const unknown = `profile \"hgx-h10O\" is not defined: import it first (metalhall profile import --file FILE hgx-h10O) or fix the name`
	enrol := MachineEnroll{Name: "m9", Rack: "rempty", Unit: 5, MACs: []string{"52:54:00:00:09:09"}, BMCAddress: "127.0.0.9",
		BMCProtocol: "redfish", BMCUser: "root", BMCPassword: "pw", PowerW: 1000, Profile: "hgx-h10O"}
	status, body := f.do("admin", "POST", "/api/v1/machines", enrol)
	if status != http.StatusBadRequest || !strings.Contains(string(body), `machine \"m9\": `+unknown) {
		t.Fatalf("enrol naming a missing profile: %d %s", status, body)
	}
	if _, err := f.inv.Machine(t.Context(), "m9"); err == nil {
		t.Fatal("the refused enrolment created its machine")
	}

	typo := "hgx-h10O"
	status, body = f.do("admin", "PATCH", "/api/v1/machines/ma", MachineUpdate{Profile: &typo})
	if status != http.StatusBadRequest || !strings.Contains(string(body), `machine \"ma\": `+unknown) {
		t.Fatalf("update to a missing profile: %d %s", status, body)
	}
	if m, err := f.inv.Machine(t.Context(), "ma"); err != nil || m.Profile == typo {
		t.Fatalf("the refused update changed the machine: %+v %v", m, err)
	}

	enrol.Profile = "hgx-h100"
	if status, body := f.do("admin", "POST", "/api/v1/machines", enrol); status != http.StatusCreated {
		t.Fatalf("enrol naming a profile that exists: %d %s", status, body)
	}
	none := ""
	if status, body := f.do("admin", "PATCH", "/api/v1/machines/m9", MachineUpdate{Profile: &none}); status != http.StatusOK {
		t.Fatalf("clearing a machine's profile: %d %s", status, body)
	}
}
