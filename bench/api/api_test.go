// Package api_test measures API request throughput with 64 concurrent
// clients over real loopback TCP, against a real store on disk (fsync on).
//
//	go test -run '^$' -bench . -benchmem ./bench/api/
//
// METALHALL_BENCH_ENGINE=etcd keeps the inventory on a three-member etcd
// cluster (package bench/benchengine) instead of a bbolt file;
// bench/inventory/run.sh runs both engines in one run.
package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/metalhall/metalhall/bench/benchengine"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
	"github.com/metalhall/metalhall/lab/etcdcluster"
	"github.com/metalhall/metalhall/service"
	"github.com/metalhall/metalhall/service/servicetest"
)

const clients = 64

// The etcd cluster, with METALHALL_BENCH_ENGINE=etcd: one for the run,
// each service on it under a prefix of its own.
var cluster struct {
	once     sync.Once
	dir      string
	c        *etcdcluster.Cluster
	err      error
	prefixes atomic.Int64
}

// engine configures the service's store: DataDir's bbolt file, or a fresh
// prefix on the run's etcd cluster.
func engine(b *testing.B) func(*service.Config) {
	name, err := benchengine.Name()
	if err != nil {
		b.Fatal(err)
	}
	if name == benchengine.Bolt {
		return nil
	}
	cluster.once.Do(func() {
		// The members' data dirs are in the temp dir, as the bbolt file
		// is (b.TempDir): the same disk.
		if cluster.dir, cluster.err = os.MkdirTemp("", "metalhall-bench-etcd-"); cluster.err == nil {
			cluster.c, cluster.err = benchengine.StartCluster(context.Background(), cluster.dir)
		}
	})
	if cluster.err != nil {
		b.Fatal(cluster.err)
	}
	prefix := fmt.Sprintf("/bench-%d/", cluster.prefixes.Add(1))
	return func(cfg *service.Config) {
		cfg.Etcd = &etcdkv.Config{Endpoints: cluster.c.Endpoints(), Prefix: prefix}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.c != nil {
		cluster.c.Close()
	}
	if cluster.dir != "" {
		os.RemoveAll(cluster.dir)
	}
	os.Exit(code)
}

// setup runs the service through its composition root, on loopback
// listeners the benchmark holds, and seeds a rack of 40 machines.
func setup(b *testing.B) (url, token string) {
	b.Helper()
	ctx := context.Background()
	svc := servicetest.Start(b, "", engine(b))
	inv := svc.Inventory()
	inv.CreateSite(ctx, inventory.Site{Name: "s"})
	inv.CreateHall(ctx, inventory.Hall{Name: "h", Site: "s"})
	inv.CreatePhase(ctx, inventory.Phase{Hall: "h", Number: 1, BudgetW: 10_000_000})
	inv.CreateRack(ctx, inventory.Rack{Name: "r", Hall: "h", Phase: 1, BudgetW: 440_000})
	for i := 1; i <= 40; i++ {
		_, err := inv.EnrollMachine(ctx, inventory.Enrollment{Machine: inventory.Machine{Name: fmt.Sprintf("m%02d", i), Rack: "r", Unit: i,
			MACs: []string{fmt.Sprintf("52:54:00:00:00:%02x", i)}, PowerW: 10_000,
			BMC: inventory.BMC{Address: fmt.Sprintf("10.0.0.%d", i), Protocol: inventory.ProtocolRedfish, Username: "root"}}})
		if err != nil {
			b.Fatal(err)
		}
	}
	return svc.AdminURL(), svc.Token
}

func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
}

func do(b *testing.B, c *http.Client, req *http.Request, want int) {
	resp, err := c.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Errorf("%s %s: %d", req.Method, req.URL.Path, resp.StatusCode)
	}
}

// BenchmarkGetMachine: GET /api/v1/machines/{name}, 64 clients.
func BenchmarkGetMachine(b *testing.B) {
	url, tok := setup(b)
	c := httpClient()
	var n atomic.Int64
	b.SetParallelism(clients / 2) // × GOMAXPROCS(2) = 64 goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)%40 + 1
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/machines/m%02d", url, i), nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			do(b, c, req, 200)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkPostWrite: a mutating request (create a site) — one store
// transaction plus its audit event — with 64 clients, fsync on.
func BenchmarkPostWrite(b *testing.B) {
	url, tok := setup(b)
	c := httpClient()
	var n atomic.Int64
	b.SetParallelism(clients / 2)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := fmt.Sprintf(`{"name":"site-%d"}`, n.Add(1))
			req, _ := http.NewRequest("POST", url+"/api/v1/sites", bytes.NewBufferString(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			do(b, c, req, 201)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
