package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/service"
	"github.com/metalhall/metalhall/service/servicetest"
)

func start(t *testing.T, dir string, edit func(*service.Config)) *servicetest.Running {
	t.Helper()
	return servicetest.Start(t, dir, edit)
}

func get(t *testing.T, c *http.Client, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func auditCount(t *testing.T, inv *inventory.Store) int {
	t.Helper()
	evs, err := inv.Events(context.Background(), inventory.EventFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func TestProvisioningListenerServesOnlyWhatMachinesUse(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	admin, prov := r.AdminURL(), r.ProvisionURL()
	if admin == prov {
		t.Fatalf("one URL for both listeners: %s", admin)
	}
	before := auditCount(t, r.Inventory())
	// Not there on the provisioning side, with or without a valid token,
	// and nothing is written for trying.
	for _, path := range []string{"/api/v1/sites", "/api/v1/machines/m1", "/api/v1/openapi.json", "/metrics", "/healthz", "/ui/"} {
		for _, tok := range []string{"", r.Token} {
			if code, body := get(t, http.DefaultClient, prov+path, tok); code != http.StatusNotFound {
				t.Errorf("provisioning %s (token %v): %d %s", path, tok != "", code, body)
			}
		}
	}
	if after := auditCount(t, r.Inventory()); after != before {
		t.Errorf("requests on the provisioning listener wrote %d audit events", after-before)
	}
	// What machines use is there: an agent endpoint without a token is
	// refused, not missing; /boot/ and /metadata/ answer.
	if code, _ := get(t, http.DefaultClient, prov+wire.PathPrefix+wire.EndpointTask, ""); code == http.StatusNotFound {
		t.Errorf("agent endpoint missing on the provisioning listener")
	}
	// An unknown MAC's script is a 404 either way: the boot handler's own
	// counter tells that it got the request.
	get(t, http.DefaultClient, prov+"/boot/52:54:00:00:00:01.ipxe", "")
	if _, m := get(t, http.DefaultClient, admin+"/metrics", ""); !strings.Contains(m, `metalhall_http_boot_requests_total{code="404",kind="script"} 1`) {
		t.Errorf("/boot/ on the provisioning listener did not reach the boot handler")
	}
	// And the admin side carries the API and /metrics, not the boot path.
	if code, body := get(t, http.DefaultClient, admin+"/api/v1/sites", r.Token); code != http.StatusOK {
		t.Errorf("admin API: %d %s", code, body)
	}
	if code, _ := get(t, http.DefaultClient, admin+"/metrics", ""); code != http.StatusOK {
		t.Errorf("admin /metrics: %d", code)
	}
	for _, path := range []string{"/boot/52:54:00:00:00:01.ipxe", "/metadata/meta-data", wire.PathPrefix + wire.EndpointTask} {
		if code, _ := get(t, http.DefaultClient, admin+path, ""); code != http.StatusNotFound {
			t.Errorf("admin %s: %d, want 404", path, code)
		}
	}
}

func TestNewFailingHalfWayReleasesWhatItTook(t *testing.T) {
	dir := t.TempDir()
	held := servicetest.Listener(t)
	defer held.Close()
	// The database opens, then the provisioning address is taken: New
	// fails, and must have closed the database and the admin listener.
	svc, err := service.New(context.Background(), service.Config{DataDir: dir, AdminAddr: "127.0.0.1:0", ProvisionAddr: held.Addr().String()})
	if err == nil {
		svc.Close()
		t.Fatal("New succeeded on a provisioning address in use")
	}
	if !strings.Contains(err.Error(), "provisioning listener") {
		t.Errorf("error does not say which listener: %v", err)
	}
	if err := svc.Close(); err != nil {
		t.Errorf("Close after a failed New: %v", err)
	}
	svc.Close() // twice is fine too
	// The database is free again: a second New on the same dir works.
	r := start(t, dir, nil)
	if r.Token == "" {
		t.Fatal("no admin token")
	}
}

func TestSecondServiceOnSameDataDirFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	start(t, dir, nil)
	svc, err := service.New(context.Background(), service.Config{DataDir: dir, AdminListener: servicetest.Listener(t), ProvisionListener: servicetest.Listener(t)})
	if !errors.Is(err, service.ErrDataDirInUse) {
		svc.Close()
		t.Fatalf("second New: %v, want ErrDataDirInUse", err)
	}
}

func TestMetricsPassPromtoolCheck(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; make deps installs it)")
	}
	r := start(t, t.TempDir(), nil)
	// Traffic first, so the labelled series exist: an API request, a
	// provisioning-side 404 and an image blob request.
	get(t, http.DefaultClient, r.AdminURL()+"/api/v1/sites", r.Token)
	get(t, http.DefaultClient, r.ProvisionURL()+"/boot/files/nothing", "")
	get(t, http.DefaultClient, r.ProvisionURL()+"/images/"+strings.Repeat("0", 64), "")
	code, body := get(t, http.DefaultClient, r.AdminURL()+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{"metalhall_api_requests_total", "metalhall_machines", "metalhall_http_boot_requests_total",
		"metalhall_bmc_operations_in_flight", "metalhall_boot_recorder_dropped_total", "metalhall_image_blob_requests_total",
		"metalhall_bmc_connections_opened_total", "metalhall_bmc_connections_open",
		"metalhall_image_imports_in_flight", "metalhall_jobs_running", "metalhall_store_writes_total", "metalhall_store_write_commits_total", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestTLSOnTheAdminListenerIsPinnedByFingerprint(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, func(c *service.Config) { c.TLS.Force = true })
	if !strings.HasPrefix(r.AdminURL(), "https://") || r.TLS() == nil {
		t.Fatalf("admin URL %s without TLS", r.AdminURL())
	}
	fp, err := os.ReadFile(filepath.Join(dir, service.FingerprintFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(fp)) != r.TLS().Fingerprint {
		t.Fatalf("fingerprint file %q, service %q", fp, r.TLS().Fingerprint)
	}
	if !strings.Contains(r.Logs.String(), r.TLS().Fingerprint) {
		t.Error("the generated certificate's fingerprint is not logged")
	}
	c := api.NewClient(r.AdminURL(), r.Token)
	if err := c.UseTLS(api.TLSOptions{Fingerprint: string(fp)}); err != nil {
		t.Fatal(err)
	}
	var sites []inventory.Site
	if err := c.Do(context.Background(), "GET", "/api/v1/sites", nil, &sites); err != nil {
		t.Fatalf("pinned client: %v", err)
	}
	bad := api.NewClient(r.AdminURL(), r.Token)
	if err := bad.UseTLS(api.TLSOptions{Fingerprint: strings.Repeat("ab", 32)}); err != nil {
		t.Fatal(err)
	}
	var pin *api.PinMismatch
	if err := bad.Do(context.Background(), "GET", "/api/v1/sites", nil, &sites); !errors.As(err, &pin) {
		t.Fatalf("wrong pin: %v, want a PinMismatch", err)
	}
	// Provisioning stays plain HTTP: PXE firmware and the agent fetch it.
	if !strings.HasPrefix(r.ProvisionURL(), "http://") {
		t.Errorf("provisioning URL %s", r.ProvisionURL())
	}
}

func TestGeneratedCertificateIsKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	first := func() string {
		svc, err := service.New(context.Background(), service.Config{DataDir: dir, AdminListener: servicetest.Listener(t), ProvisionListener: servicetest.Listener(t),
			TLS: service.TLSConfig{Force: true}})
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Close()
		return svc.TLS().Fingerprint
	}
	if a, b := first(), first(); a != b {
		t.Fatalf("fingerprint changed across restarts: %s then %s", a, b)
	}
}

func TestLoopbackAdminListenerServesPlainHTTP(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	if !strings.HasPrefix(r.AdminURL(), "http://") || r.TLS() != nil {
		t.Fatalf("loopback admin listener: %s", r.AdminURL())
	}
	if _, err := os.Stat(filepath.Join(dir, service.FingerprintFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a fingerprint file for a plain listener: %v", err)
	}
}

func TestImageBlobsAreForAgentsOnTheProvisioningListener(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	c := api.NewClient(r.AdminURL(), r.Token)
	var img api.Image
	if err := c.DoRaw(context.Background(), "POST", "/api/v1/images?name=os", "application/octet-stream", strings.NewReader("an image"), &img); err != nil {
		t.Fatal(err)
	}
	// Staff read it from the admin listener with their token...
	if code, body := get(t, http.DefaultClient, r.AdminURL()+"/images/"+img.SHA256, r.Token); code != http.StatusOK || body != "an image" {
		t.Fatalf("admin listener: %d %q", code, body)
	}
	// ...but on the provisioning listener only an agent's job token opens
	// it; an API token finds nothing there.
	if code, _ := get(t, http.DefaultClient, r.ProvisionURL()+"/images/"+img.SHA256, r.Token); code != http.StatusNotFound {
		t.Fatalf("provisioning listener with an API token: %d, want 404", code)
	}
}
