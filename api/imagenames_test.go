package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// importAs uploads body as image name for who and returns the status and
// the reply.
func (f *fixture) importAs(who, name, body string) (int, []byte) {
	f.t.Helper()
	return f.do(who, "POST", "/api/v1/images?name="+name, body)
}

func TestTenantsImportTheSameImageNameAndNeverSeeEachOther(t *testing.T) {
	f := newFixture(t)
	// The same bytes too: blobs stay shared, only names are scoped.
	if status, data := f.importAs("tenant-a", "golden", "a golden image"); status != http.StatusCreated {
		t.Fatalf("tenant A imports golden: %d %s", status, data)
	}
	status, data := f.importAs("tenant-b", "golden", "a golden image")
	if status != http.StatusCreated {
		t.Fatalf("tenant B imports the name tenant A uses: %d %s, want 201 (its own image)", status, data)
	}
	f.leaks("tenant-b", data, `"ta"`)
	for who, tenant := range map[string]string{"tenant-a": "ta", "tenant-b": "tb"} {
		other := map[string]string{"ta": "tb", "tb": "ta"}[tenant]
		status, data := f.do(who, "GET", "/api/v1/images/golden", nil)
		var img Image
		if status != http.StatusOK || json.Unmarshal(data, &img) != nil || img.Tenant != tenant {
			t.Fatalf("%s shows golden: %d %s, want its own", who, status, data)
		}
		_, data = f.do(who, "GET", "/api/v1/images", nil)
		var list []Image
		if err := json.Unmarshal(data, &list); err != nil {
			t.Fatal(err)
		}
		for _, img := range list {
			if img.Tenant == other {
				t.Errorf("%s lists %s's image %q", who, other, img.Name)
			}
		}
		if status, data := f.do(who, "GET", "/api/v1/images/"+other+"%2Fgolden", nil); status != http.StatusNotFound {
			t.Errorf("%s shows %s/golden: %d %s, want 404", who, other, status, data)
		}
		// A second import of the name is refused for the tenant's own
		// image, and says nothing of the other's.
		if status, data := f.importAs(who, "golden", "another"); status != http.StatusConflict || strings.Contains(string(data), other) {
			t.Errorf("%s imports golden again: %d %s, want 409 about its own", who, status, data)
		}
	}
	// Staff name each unambiguously; the bare name is ambiguous.
	for _, tenant := range []string{"ta", "tb"} {
		status, data := f.do("admin", "GET", "/api/v1/images/"+tenant+"%2Fgolden", nil)
		var img Image
		if status != http.StatusOK || json.Unmarshal(data, &img) != nil || img.Tenant != tenant || img.Ref != tenant+"/golden" {
			t.Fatalf("admin shows %s/golden: %d %s", tenant, status, data)
		}
	}
	if status, data := f.do("admin", "GET", "/api/v1/images/golden", nil); status != http.StatusConflict || !strings.Contains(string(data), "ta/golden") {
		t.Errorf("admin shows the bare name two tenants use: %d %s, want 409 naming the choices", status, data)
	}
	// Deleting one tenant's image leaves the other's.
	if status, data := f.do("tenant-a", "DELETE", "/api/v1/images/golden", nil); status != http.StatusNoContent {
		t.Fatalf("tenant A deletes its golden: %d %s", status, data)
	}
	if status, data := f.do("tenant-b", "GET", "/api/v1/images/golden", nil); status != http.StatusOK {
		t.Errorf("tenant B shows its golden after A deleted its own: %d %s", status, data)
	}
	if status, data := f.do("admin", "GET", "/api/v1/images/golden", nil); status != http.StatusOK {
		t.Errorf("admin shows the bare name only tb uses now: %d %s", status, data)
	}
}

func mustImage(t *testing.T, f *fixture, ref string) *inventory.Image {
	t.Helper()
	img, err := f.inv.Image(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestProvisionByNamePicksTheCallersOwnImage(t *testing.T) {
	f := newFixture(t)
	// ubuntu-24.04 is shared; each tenant also has its own of that name.
	for _, who := range []string{"tenant-a", "tenant-b"} {
		if status, data := f.importAs(who, "ubuntu-24.04", "the image of "+who); status != http.StatusCreated {
			t.Fatalf("%s imports a shared image's name: %d %s, want 201", who, status, data)
		}
	}
	for who, machine := range map[string]string{"tenant-a": "ma", "tenant-b": "mb"} {
		tenant := map[string]string{"tenant-a": "ta", "tenant-b": "tb"}[who]
		f.job(who, machine, "provision", ProvisionRequest{Image: "ubuntu-24.04"})
		j, err := f.inv.ActiveJob(t.Context(), machine)
		if err != nil {
			t.Fatal(err)
		}
		if j.Image != tenant+"/ubuntu-24.04" {
			t.Errorf("%s provisions ubuntu-24.04: the job writes %q, want its own %q", who, j.Image, tenant+"/ubuntu-24.04")
		}
	}
}

func TestTenantCannotCreateASharedImage(t *testing.T) {
	f := newFixture(t)
	status, data := f.do("tenant-a", "POST", "/api/v1/images?name=shared-one&tenant=", "bytes")
	if status != http.StatusCreated {
		t.Fatalf("import: %d %s", status, data)
	}
	img := mustImage(t, f, "ta/shared-one")
	if img.Tenant != "ta" {
		t.Fatalf("a tenant's import is %+v, want private to ta", img)
	}
	if _, err := f.inv.Image(t.Context(), "shared-one"); err == nil {
		t.Fatal("a tenant's import created a shared image")
	}
}

func TestStaffProvisionATenantsMachineWithWhatTheTenantsNameMeans(t *testing.T) {
	f := newFixture(t)
	if status, data := f.importAs("tenant-a", "ubuntu-24.04", "tenant A's own"); status != http.StatusCreated {
		t.Fatalf("import: %d %s", status, data)
	}
	// Another tenant's private image never goes onto the machine.
	if status, data := f.do("admin", "POST", "/api/v1/machines/ma/provision", ProvisionRequest{Image: "tb/tb-img"}); status != http.StatusConflict || !strings.Contains(string(data), "private to tenant") {
		t.Fatalf("admin provisions ta's machine with tb's image: %d %s, want 409", status, data)
	}
	f.job("admin", "ma", "provision", ProvisionRequest{Image: "ubuntu-24.04"})
	j, err := f.inv.ActiveJob(t.Context(), "ma")
	if err != nil {
		t.Fatal(err)
	}
	if j.Image != "ta/ubuntu-24.04" {
		t.Errorf("admin provisions ta's machine with ubuntu-24.04: the job writes %q, want the tenant's own", j.Image)
	}
}
