// Package etcdkv is the kv engine over an etcd cluster: several metalhall
// instances share one inventory.
//
// This file is the agreed surface only; the engine is being written.
package etcdkv

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Config says which cluster to use and how.
type Config struct {
	Endpoints      []string      // e.g. https://10.0.0.1:2379
	CA, Cert, Key  string        // PEM file paths; empty: plain TCP
	Prefix         string        // key prefix of this inventory, default "/metalhall/"
	DialTimeout    time.Duration // default 5s
	RequestTimeout time.Duration // per etcd call, default 5s
	MaxTxnOps      int           // the server's --max-txn-ops, default 128
	Logger         *slog.Logger
}

// Engine is a kv.Engine over etcd.
type Engine struct{}

// Open connects to the cluster.
func Open(ctx context.Context, cfg Config) (*Engine, error) {
	return nil, errors.New("etcd engine: not built yet")
}
