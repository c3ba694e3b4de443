// Package clustertest runs a real etcd member inside a test binary, for
// the tests of packages that coordinate through etcd. Only tests import
// it: the product binary never links the etcd server.
//
// The member listens on loopback only, on ports it binds itself.
package clustertest

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is one embedded etcd member.
type Server struct {
	e        *embed.Etcd
	dir      string
	Endpoint string // http://127.0.0.1:port, for clientv3.Config.Endpoints
}

// Start starts a single-member cluster with its data and sockets in a new
// temporary directory. Close
// stops it and removes the directory.
func Start() (*Server, error) {
	dir, err := os.MkdirTemp("", "etcd")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = filepath.Join(dir, "data")
	// Port 0: the member binds and keeps its own loopback ports (the
	// client's real address is read back below); a single member never
	// dials its advertised peer URL.
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	client := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.UnsafeNoFsync = true // a test's data does not outlive the test
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	s.e = e
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		s.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(time.Minute): // a hang guard on a slow shared machine
		s.Close()
		return nil, errors.New("embedded etcd: not ready within a minute")
	}
	s.Endpoint = "http://" + e.Clients[0].Addr().String()
	return s, nil
}

// Close stops the member and removes its directory.
func (s *Server) Close() {
	if s.e != nil {
		s.e.Close()
	}
	os.RemoveAll(s.dir)
}

// Client is a new client of the member, closed when the test ends (closing
// it earlier is fine: that is how a test makes an instance vanish without
// revoking its lease).
func (s *Server) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// Prefix is a key prefix of the test's own, so tests sharing one member
// never see each other's keys.
func Prefix(tb testing.TB) string {
	return "/t/" + tb.Name() + "/"
}
