package service_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/cluster/clustertest"
	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
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

// TestBlobsReachEveryInstanceAndOutliveTheirImporter runs two services on
// one inventory in (embedded) etcd. An image imported on a is on b soon
// after without anyone asking b for it; with a gone, b still serves it.
func TestBlobsReachEveryInstanceAndOutliveTheirImporter(t *testing.T) {
	srv, err := clustertest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // after the services (cleanups run last first)
	onEtcd := func(id string) func(*service.Config) {
		return func(c *service.Config) {
			c.Etcd = &etcdkv.Config{Endpoints: []string{srv.Endpoint}, Prefix: clustertest.Prefix(t)}
			c.Cluster = &service.ClusterConfig{InstanceID: id, TTL: 2 * time.Second}
		}
	}
	dirA := t.TempDir()
	a, stopA := startStoppable(t, dirA, onEtcd("a"))
	// One sealing key for every instance of a control plane; the admin
	// token is the inventory's, made by the first.
	dirB := t.TempDir()
	for _, f := range []string{"seal.key", "admin.token"} {
		data, err := os.ReadFile(filepath.Join(dirA, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := start(t, dirB, onEtcd("b"))

	ctx := context.Background()
	var img api.Image
	if err := api.NewClient(a.AdminURL(), a.Token).DoRaw(ctx, "POST", "/api/v1/images?name=os", "application/octet-stream",
		strings.NewReader("an image on a"), &img); err != nil {
		t.Fatal(err)
	}
	// b's /metrics says when: nothing asked b for the blob.
	for {
		_, m := get(t, http.DefaultClient, b.AdminURL()+"/metrics", "")
		if strings.Contains(m, "\nmetalhall_image_blobs_missing 0\n") && strings.Contains(m, "\nmetalhall_image_blob_fetches_total{outcome=\"done\"} 1\n") {
			break
		}
		if d, ok := t.Deadline(); ok && time.Until(d) < 10*time.Second {
			t.Fatalf("b never held the blob:\n%s", m)
		}
		time.Sleep(20 * time.Millisecond) // a poll; the test's timeout bounds it
	}
	blob, _, err := images.BlobFiles(img.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dirB, "images", filepath.FromSlash(blob))); err != nil {
		t.Fatalf("b's copy of the blob: %v", err)
	}
	if !strings.Contains(b.Logs.String(), "image blob fetched from a peer") || !strings.Contains(b.Logs.String(), "why=replicated") {
		t.Errorf("b did not say it fetched the blob:\n%s", b.Logs.String())
	}

	stopA()
	if code, body := get(t, http.DefaultClient, b.AdminURL()+"/images/"+img.SHA256, b.Token); code != http.StatusOK || body != "an image on a" {
		t.Fatalf("b's blob with a gone: %d %q\n%s", code, body, b.Logs.String())
	}
	if _, m := get(t, http.DefaultClient, b.AdminURL()+"/metrics", ""); !strings.Contains(m, "\nmetalhall_image_blob_fetches_total{outcome=\"done\"} 1\n") ||
		!strings.Contains(m, "\nmetalhall_image_blob_fetches_total{outcome=\"failed\"} 0\n") {
		t.Errorf("b fetched again with a gone:\n%s", m)
	}
}

// startStoppable is servicetest.Start for a service the test stops
// before its end (an instance that goes away); stop is idempotent.
func startStoppable(t *testing.T, dir string, edit func(*service.Config)) (r *servicetest.Running, stop func()) {
	t.Helper()
	r = &servicetest.Running{Dir: dir, Logs: &servicetest.SyncBuffer{}}
	cfg := service.Config{DataDir: dir, AdminListener: servicetest.Listener(t), ProvisionListener: servicetest.Listener(t),
		Logger: slog.New(slog.NewTextHandler(r.Logs, nil)), Version: "test"}
	edit(&cfg)
	svc, err := service.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("service.New: %v\n%s", err, r.Logs.String())
	}
	r.Service = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("service stopped with %v\n%s", err, r.Logs.String())
			}
			if err := svc.Close(); err != nil {
				t.Errorf("closing the service: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	r.Token = strings.TrimSpace(string(tok))
	return r, stop
}
