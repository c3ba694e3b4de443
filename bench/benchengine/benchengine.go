// Package benchengine lets a benchmark run the inventory on either engine,
// chosen by METALHALL_BENCH_ENGINE: "bolt" (the default, one bbolt file)
// or "etcd" (a real three-member cluster of Debian's etcd-server that this
// package starts through lab/etcdcluster).
//
// For a fair comparison the etcd members keep their data dirs in the same
// directory the bbolt file would be in (the caller's temp dir, on the same
// disk), and run with etcd's own default timings (100 ms heartbeat, 1 s
// election), not the fast ones tests use.
package benchengine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
	"github.com/metalhall/metalhall/lab/etcdcluster"
)

// EnvVar names the engine a benchmark runs on.
const EnvVar = "METALHALL_BENCH_ENGINE"

// Engines a benchmark can run on.
const (
	Bolt = "bolt"
	Etcd = "etcd"
)

// Name is the engine METALHALL_BENCH_ENGINE asks for (bolt when unset), or
// an error that says what to set it to.
func Name() (string, error) {
	switch v := os.Getenv(EnvVar); v {
	case "", Bolt:
		return Bolt, nil
	case Etcd:
		if err := etcdcluster.Available(); err != nil {
			return "", fmt.Errorf("%s=etcd: %w", EnvVar, err)
		}
		return Etcd, nil
	default:
		return "", fmt.Errorf("%s=%q: use bolt or etcd", EnvVar, v)
	}
}

// StartCluster starts a three-member etcd cluster with its data dirs
// under dir, and waits until it has a leader.
func StartCluster(ctx context.Context, dir string) (*etcdcluster.Cluster, error) {
	edir := filepath.Join(dir, "etcd")
	if err := os.MkdirAll(edir, 0o700); err != nil {
		return nil, err
	}
	return etcdcluster.Start(ctx, etcdcluster.Config{Members: 3, Dir: edir, HeartbeatMS: 100, ElectionMS: 1000})
}

// Store is an open inventory on the chosen engine.
type Store struct {
	*inventory.Store
	Engine  string
	Cluster *etcdcluster.Cluster // nil on bolt
	Etcd    *etcdkv.Engine       // nil on bolt; the store closes it
	dir     string
}

// Open opens a fresh inventory under dir on the chosen engine.
func Open(ctx context.Context, dir string) (*Store, error) {
	name, err := Name()
	if err != nil {
		return nil, err
	}
	s := &Store{Engine: name, dir: dir}
	if name == Bolt {
		s.Store, err = inventory.Open(filepath.Join(dir, "metalhall.db"), inventory.Options{})
		return s, err
	}
	if s.Cluster, err = StartCluster(ctx, dir); err != nil {
		return nil, err
	}
	if s.Store, s.Etcd, err = OpenEtcd(ctx, etcdkv.Config{Endpoints: s.Cluster.Endpoints()}); err != nil {
		s.Cluster.Close()
		return nil, err
	}
	return s, nil
}

// OpenEtcd opens the inventory kept on the cluster cfg names. The store
// owns the engine and closes it.
func OpenEtcd(ctx context.Context, cfg etcdkv.Config) (*inventory.Store, *etcdkv.Engine, error) {
	e, err := etcdkv.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	inv, err := inventory.OpenEngine(e, inventory.Options{})
	if err != nil {
		e.Close()
		return nil, nil, err
	}
	return inv, e, nil
}

// Compact drops the etcd history before now, as a cluster run with
// --auto-compaction does; without it a 100,000-machine import keeps every
// superseded revision and runs into etcd's 2 GiB backend quota. A no-op
// on bolt.
func (s *Store) Compact(ctx context.Context) error {
	if s.Etcd == nil {
		return nil
	}
	if _, err := s.Etcd.Client().Compact(ctx, s.Etcd.Revision()); err != nil {
		return fmt.Errorf("compacting etcd at revision %d: %w", s.Etcd.Revision(), err)
	}
	return nil
}

// Bytes is what the inventory takes on disk: the bbolt file, or the
// backend file (etcd's own bbolt, history included) of one etcd member.
func (s *Store) Bytes() (int64, error) {
	p := filepath.Join(s.dir, "metalhall.db")
	if s.Etcd != nil {
		p = filepath.Join(s.dir, "etcd", "m1", "member", "snap", "db")
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Close closes the store and stops the cluster.
func (s *Store) Close() error {
	err := s.Store.Close()
	if s.Cluster != nil {
		s.Cluster.Close()
	}
	return err
}
