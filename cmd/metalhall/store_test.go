package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/boltkv"
	"github.com/metalhall/metalhall/lab/etcdcluster"
	"github.com/metalhall/metalhall/service/servicetest"
)

// migrateJSON is what `store migrate -o json` prints.
type migrateJSON struct {
	From, To     string
	Buckets      []kv.BucketReport
	Keys         int
	Transactions int
	Cleared      int
	Verified     bool
}

// filledDataDir runs a service on a new data dir, describes a hall, a
// rack, a tenant and a subnet through it, and returns the dir and its
// admin token once the service has stopped. hold runs while it serves.
func filledDataDir(t *testing.T, hold func(r cliRunner, dir string)) (dir, token string) {
	dir = t.TempDir()
	t.Run("serve", func(t *testing.T) {
		rs := servicetest.Start(t, dir, nil)
		r := cliRunner{t, rs.AdminURL(), rs.Token}
		rackInCommissioningHall(r, "44")
		r.ok("tenant", "create", "bank-x")
		r.ok("subnet", "create", "--cidr", "127.77.0.0/24", "--gateway", "127.77.0.1", "--range", "127.77.0.100-127.77.0.150", "prov")
		token = rs.Token
		hold(r, dir)
	}) // the service stops with the subtest
	return dir, token
}

// serveOn starts a service on a migrated data dir with the source's seal
// key and admin token, and returns a CLI on it.
func serveOn(t *testing.T, src, dir string) cliRunner {
	for _, f := range []string{"seal.key", "admin.token"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rs := servicetest.Start(t, dir, nil)
	return cliRunner{t, rs.AdminURL(), rs.Token}
}

// migrateRoundTrip moves a filled bbolt inventory into the store that
// through names (its --from/--to SPEC, then any flags it needs) and back
// into a new bbolt file, and checks that a service on the result has it
// all. Any engine runs it: bolt here; etcd gives "etcd" and its flags.
func migrateRoundTrip(t *testing.T, through func(t *testing.T) (spec string, flags []string)) {
	srcDir, _ := filledDataDir(t, func(cliRunner, string) {})
	r := cliRunner{t: t, server: "http://127.0.0.1:8280"} // offline: no service is asked
	mid, flags := through(t)
	out := r.ok(append([]string{"store", "migrate", "--from", "bolt:" + srcDir, "--to", mid}, flags...)...)
	for _, want := range []string{"BUCKET", "machines", "racks", "same", "every bucket read back and verified"} {
		if !strings.Contains(out, want) {
			t.Errorf("store migrate says no %q:\n%s", want, out)
		}
	}
	backDir := t.TempDir()
	var res migrateJSON
	js := r.ok(append([]string{"store", "migrate", "--from", mid, "--to", "bolt:" + backDir, "-o", "json"}, flags...)...)
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatalf("%v:\n%s", err, js)
	}
	if !res.Verified || res.Keys == 0 || len(res.Buckets) < 10 || res.To != "bolt:"+filepath.Join(backDir, "metalhall.db") {
		t.Errorf("store migrate -o json: %+v", res)
	}
	for _, b := range res.Buckets {
		if !b.Same || b.SHA256 != b.DstSHA256 {
			t.Errorf("bucket %s: %+v", b.Name, b)
		}
	}
	back := serveOn(t, srcDir, backDir)
	if out := back.ok("rack", "show", "r1"); !strings.Contains(out, "r1") {
		t.Errorf("rack show on the copy: %s", out)
	}
	for _, what := range [][]string{{"tenant", "list"}, {"subnet", "list"}, {"hall", "list"}} {
		if out := back.ok(what...); !strings.Contains(out, map[string]string{"tenant": "bank-x", "subnet": "127.77.0.0/24", "hall": "h1"}[what[0]]) {
			t.Errorf("%s on the copy: %s", strings.Join(what, " "), out)
		}
	}
}

func TestStoreMigrateMovesAnInventoryBetweenBoltFilesAndBack(t *testing.T) {
	migrateRoundTrip(t, func(t *testing.T) (string, []string) {
		return "bolt:" + filepath.Join(t.TempDir(), "middle.db"), nil
	})
}

func TestStoreMigrateRefusalsChangeNothing(t *testing.T) {
	other := filepath.Join(t.TempDir(), "copy.db")
	r := cliRunner{t: t, server: "http://127.0.0.1:8280"} // offline: no service is asked
	// While a service holds a store: refused at once, nothing created.
	src, _ := filledDataDir(t, func(held cliRunner, dir string) {
		code, out, errs := held.run("store", "migrate", "--from", "bolt:"+dir, "--to", "bolt:"+other)
		if code != exitError || out != "" || !strings.Contains(errs, "held by a running metalhall: stop metalhall serve first") {
			t.Errorf("from a data dir a service holds: exit %d %q %q", code, out, errs)
		}
	})
	t.Run("held", func(t *testing.T) {
		dir := t.TempDir()
		rs := servicetest.Start(t, dir, nil)
		held := cliRunner{t, rs.AdminURL(), rs.Token}
		code, _, errs := held.run("store", "migrate", "--from", "bolt:"+src, "--to", "bolt:"+dir)
		if code != exitError || !strings.Contains(errs, "--to bolt:"+filepath.Join(dir, "metalhall.db")+" is held by a running metalhall") {
			t.Errorf("into a data dir a service holds: exit %d %q", code, errs)
		}
		if _, err := os.Stat(other); !os.IsNotExist(err) {
			t.Errorf("a refused migration created %s", other)
		}
	})

	r.ok("store", "migrate", "--from", "bolt:"+src, "--to", "bolt:"+other)
	before, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.db")
	if e, err := boltkv.Open(empty, boltkv.Options{}); err != nil {
		t.Fatal(err)
	} else {
		e.Close()
	}
	half := filepath.Join(t.TempDir(), "half.db")
	if e, err := boltkv.Open(half, boltkv.Options{}); err != nil {
		t.Fatal(err)
	} else {
		e.Update(func(tx kv.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("machines"))
			if err != nil {
				return err
			}
			b.Put([]byte("m1"), []byte("{}"))
			m, err := tx.CreateBucketIfNotExists(kv.MigrationBucket)
			if err != nil {
				return err
			}
			return m.Put([]byte("in_progress"), []byte(`{"started":"2026-11-30T01:00:00Z"}`))
		})
		e.Close()
	}
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--from", "bolt:" + src, "--to", "bolt:" + other}, exitUsage, "not empty (keys in"},
		{[]string{"--from", "bolt:" + src, "--to", "bolt:" + filepath.Join(src, "metalhall.db")}, exitUsage, "the same file"},
		{[]string{"--from", "bolt:" + filepath.Join(src, "none.db"), "--to", "bolt:" + fresh}, exitUsage, "no such file"},
		{[]string{"--from", "bolt:" + empty, "--to", "bolt:" + fresh}, exitUsage, "holds no metalhall inventory"},
		{[]string{"--from", "bolt:" + half, "--to", "bolt:" + fresh}, exitError, "unfinished copy"},
		{[]string{"--from", "bolt:" + src, "--to", "bolt:" + filepath.Join(src, "no-dir", "x.db")}, exitUsage, "does not exist"},
		{[]string{"--from", "mysql:x", "--to", "bolt:" + fresh}, exitUsage, "want bolt:PATH"},
		{[]string{"--from", "etcd", "--to", "etcd", "--etcd-endpoints", "http://127.0.0.1:2379"}, exitUsage, "both etcd"},
		{[]string{"--from", "bolt:" + src, "--to", "etcd"}, exitUsage, "needs --etcd-endpoints"},
		{[]string{"--from", "bolt:" + src, "--to", "bolt:" + fresh, "--etcd-prefix", "/x/"}, exitUsage, "neither --from nor --to is etcd"},
		{[]string{"--to", "bolt:" + fresh}, exitUsage, "from"},
	} {
		code, out, errs := r.run(append([]string{"store", "migrate"}, tc.args...)...)
		if code != tc.code || out != "" || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("store migrate %s: exit %d %q %q, want exit %d and %q", strings.Join(tc.args, " "), code, out, errs, tc.code, tc.want)
		}
	}
	if after, _ := os.ReadFile(other); !bytes.Equal(before, after) {
		t.Error("a refused migration changed the destination")
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("refused migrations left %s", fresh)
	}
	// Overwriting is asked for: done, and said.
	if out := r.ok("store", "migrate", "--overwrite", "--from", "bolt:"+src, "--to", "bolt:"+other); !strings.Contains(out, "after deleting its") {
		t.Errorf("store migrate --overwrite: %s", out)
	}
}

// bbolt → a real three-member etcd cluster (Debian's etcd-server) → bbolt,
// through the command, each copy verified.
func TestStoreMigrateMovesAnInventoryToARealEtcdClusterAndBack(t *testing.T) {
	if err := etcdcluster.Available(); err != nil {
		t.Skip(err)
	}
	c, err := etcdcluster.Start(t.Context(), etcdcluster.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	migrateRoundTrip(t, func(t *testing.T) (string, []string) {
		return "etcd", []string{"--etcd-endpoints", strings.Join(c.Endpoints(), ",")}
	})
}
