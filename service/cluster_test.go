package service_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/cluster/clustertest"
	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/service"
	"github.com/metalhall/metalhall/service/servicetest"
)

// TestInstancesRegisterAndFetchBlobsFromEachOther runs two services on one
// (embedded) etcd. Each registers the URLs it serves at; one that lacks a
// blob fetches it from the other's provisioning listener, signed with the
// key both derive from their shared sealing key.
func TestInstancesRegisterAndFetchBlobsFromEachOther(t *testing.T) {
	srv, err := clustertest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // after the services (cleanups run last first)
	join := func(id string) func(*service.Config) {
		return func(c *service.Config) {
			c.Cluster = &service.ClusterConfig{Client: srv.Client(t), Prefix: clustertest.Prefix(t), InstanceID: id, TTL: 2 * time.Second}
		}
	}
	a := start(t, t.TempDir(), join("a"))
	// One sealing key for every instance of a control plane.
	dirB := t.TempDir()
	key, err := os.ReadFile(filepath.Join(a.Dir, "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "seal.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b := start(t, dirB, join("b"))

	ctx := context.Background()
	ms, err := a.Cluster().Members(ctx)
	if err != nil || len(ms) != 2 || ms[0].ID != "a" || ms[0].APIURL != a.AdminURL() || ms[1].ProvisioningURL != b.ProvisionURL() {
		t.Fatalf("members: %+v %v", ms, err)
	}

	// Until the inventory lives in etcd each keeps its own catalogue: the
	// same image goes into both, and b then loses its copy of the blob.
	var img api.Image
	for _, r := range []*servicetest.Running{a, b} {
		c := api.NewClient(r.AdminURL(), r.Token)
		if err := c.DoRaw(ctx, "POST", "/api/v1/images?name=os", "application/octet-stream", strings.NewReader("an image"), &img); err != nil {
			t.Fatal(err)
		}
	}
	blob, _, err := images.BlobFiles(img.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dirB, "images", filepath.FromSlash(blob))); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, http.DefaultClient, b.AdminURL()+"/images/"+img.SHA256, b.Token); code != http.StatusOK || body != "an image" {
		t.Fatalf("b's blob, fetched from a: %d %q\n%s", code, body, b.Logs.String())
	}
	if !strings.Contains(b.Logs.String(), "image blob fetched from a peer") {
		t.Errorf("b did not say it fetched the blob:\n%s", b.Logs.String())
	}
	_, metrics := get(t, http.DefaultClient, a.AdminURL()+"/metrics", "")
	for _, want := range []string{"metalhall_cluster_session_up 1", "metalhall_cluster_sessions_lost_total 0", "metalhall_jobs_held_elsewhere 0"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
