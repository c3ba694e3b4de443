package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/backup"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/boltkv"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
)

func storeCommand() *cli.Command {
	return &cli.Command{Name: "store", Usage: "the inventory's storage engine: move it between a bbolt file and an etcd cluster", Subcommands: []*cli.Command{
		{Name: "migrate", Usage: "copy the whole inventory from one store to another, offline, and verify the copy",
			UsageText: `metalhall store migrate --from SPEC --to SPEC [--overwrite]
    [--etcd-endpoints URL,...] [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE] [--etcd-prefix P]

SPEC is bolt:PATH — a database file, or a data dir holding metalhall.db —
or etcd, the cluster the --etcd-* flags name. Run it with every
'metalhall serve' on either store stopped: a bbolt file a running service
holds is refused.

Every bucket of the inventory is copied from one snapshot of the source,
in transactions small enough for etcd's limits, then read back from the
destination and compared, bucket by bucket: key count, a sha256 over its
keys and values in order, and its sequence. The destination must be
empty unless --overwrite (its keys are deleted first). Until the copy is
verified the destination is marked unfinished, and a store so marked is
no source; run the migration again with --overwrite. The source is never
changed: keep it as a file backup.

The seal key (DATA_DIR/seal.key) is not in the store: every instance on
the destination needs the source's, or BMC passwords cannot be read.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "from", Required: true, Usage: "the store to copy: bolt:PATH or etcd"},
				&cli.StringFlag{Name: "to", Required: true, Usage: "the store to copy into: bolt:PATH or etcd"},
				&cli.BoolFlag{Name: "overwrite", Usage: "copy into a store that holds keys: they are deleted first"},
				&cli.StringSliceFlag{Name: "etcd-endpoints", Usage: "the etcd side: the cluster's client URLs, e.g. https://10.0.0.1:2379 (repeatable or comma-separated)"},
				&cli.StringFlag{Name: "etcd-ca", Usage: "the etcd side: PEM CA bundle the members' certificates chain to"},
				&cli.StringFlag{Name: "etcd-cert", Usage: "the etcd side: PEM client certificate"},
				&cli.StringFlag{Name: "etcd-key", Usage: "the etcd side: PEM key of the client certificate"},
				&cli.StringFlag{Name: "etcd-prefix", Value: "/metalhall/", Usage: "the etcd side: the key prefix of this inventory"},
				outputFlag(),
			},
			Action: storeMigrate},
	}}
}

// storeSpec is one side of a migration.
type storeSpec struct {
	etcd bool
	path string // bolt: the database file
}

func (s storeSpec) String() string {
	if s.etcd {
		return "etcd"
	}
	return "bolt:" + s.path
}

// parseStoreSpec reads --from or --to. A bolt path that is a directory
// is a data dir: its metalhall.db.
func parseStoreSpec(flag, spec string) (storeSpec, error) {
	if spec == "etcd" {
		return storeSpec{etcd: true}, nil
	}
	p, ok := strings.CutPrefix(spec, "bolt:")
	if !ok || p == "" {
		return storeSpec{}, usagef("--%s %q: want bolt:PATH (a database file or a data dir) or etcd", flag, spec)
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		p = filepath.Join(p, backup.DBName)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return storeSpec{}, usagef("--%s %q: %v", flag, spec, err)
	}
	return storeSpec{path: abs}, nil
}

// migrateResult is what store migrate prints.
type migrateResult struct {
	From string `json:"from"`
	To   string `json:"to"`
	*kv.CopyReport
	Verified bool `json:"verified"`
}

func storeMigrate(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if _, err := outputFormat(c); err != nil {
		return err
	}
	from, err := parseStoreSpec("from", c.String("from"))
	if err != nil {
		return err
	}
	to, err := parseStoreSpec("to", c.String("to"))
	if err != nil {
		return err
	}
	switch {
	case from.etcd && to.etcd:
		return usagef("store migrate: --from and --to are both etcd: one side is a bbolt file (bolt:PATH)")
	case !from.etcd && !to.etcd && sameFile(from.path, to.path):
		return usagef("store migrate: --from and --to are the same file, %s", from.path)
	}
	etcdCfg, err := etcdConfig(c, from.etcd || to.etcd, "store migrate", "neither --from nor --to is etcd")
	if err != nil {
		return err
	}
	ctx := c.Context

	src, err := openStore(ctx, from, etcdCfg, false)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := holdsInventory(src); err != nil {
		return usagef("store migrate: --from %s: %v", from, err)
	}
	created := false
	if !to.etcd {
		_, statErr := os.Stat(to.path)
		created = errors.Is(statErr, os.ErrNotExist)
	}
	dst, err := openStore(ctx, to, etcdCfg, true)
	if err != nil {
		return err
	}
	rep, err := kv.Copy(ctx, dst, src, kv.CopyOptions{Buckets: inventory.Buckets(), Overwrite: c.Bool("overwrite")})
	closeErr := dst.Close()
	if err == nil {
		err = closeErr
	}
	if err != nil {
		var ne *kv.NotEmptyError
		if created {
			// A file this command made holds nothing else: leave no half copy.
			os.Remove(to.path)
		}
		switch {
		case errors.As(err, &ne):
			return usagef("store migrate: %s: %v (--overwrite)", to, ne)
		case errors.Is(err, kv.ErrUnfinishedCopy):
			return fmt.Errorf("store migrate: %s is itself an unfinished copy: copy into it again from its own source, with --overwrite", from)
		case created:
			return fmt.Errorf("store migrate: %w; %s removed", err, to)
		}
		return fmt.Errorf("store migrate: %w; run it again with --overwrite", err)
	}
	res := migrateResult{From: from.String(), To: to.String(), CopyReport: rep, Verified: true}
	return show(c, res, func(w io.Writer) {
		rows := make([][]string, 0, len(rep.Buckets))
		for _, b := range rep.Buckets {
			same := "same"
			if !b.Same {
				same = "differs"
			}
			rows = append(rows, []string{b.Name, fmt.Sprint(b.Keys), fmt.Sprint(b.Sequence), b.SHA256[:12], same})
		}
		printTable(w, []string{"BUCKET", "KEYS", "SEQUENCE", "SHA256", "COPY"}, rows)
		cleared := ""
		if rep.Cleared > 0 {
			cleared = fmt.Sprintf(", after deleting its %d keys", rep.Cleared)
		}
		fmt.Fprintf(w, "copied %d keys (%s) of %d buckets from %s to %s in %d transactions%s; every bucket read back and verified\n",
			rep.Keys, humanBytes(rep.Bytes), len(rep.Buckets), from, to, rep.Transactions, cleared)
	})
}

// holdsInventory refuses a source with none of the inventory's buckets:
// a wrong path or prefix would otherwise copy nothing, and say so
// successfully.
func holdsInventory(e kv.Engine) error {
	found := false
	err := e.View(func(tx kv.Tx) error {
		for _, b := range inventory.Buckets() {
			found = found || tx.Bucket(b) != nil
		}
		return nil
	})
	if err == nil && !found {
		err = errors.New("it holds no metalhall inventory")
	}
	return err
}

// humanBytes writes n in KiB or MiB.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// sameFile reports whether two paths name one file, also through links.
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// etcdConfig reads the --etcd-* flags (of store migrate and serve); they
// are required when etcd is used, and refused otherwise (a flag that does
// nothing hides a mistake): unused says why they are not.
func etcdConfig(c *cli.Context, used bool, cmd, unused string) (etcdkv.Config, error) {
	cfg := etcdkv.Config{Prefix: c.String("etcd-prefix"), CA: c.String("etcd-ca"), Cert: c.String("etcd-cert"), Key: c.String("etcd-key")}
	for _, e := range c.StringSlice("etcd-endpoints") {
		for _, p := range strings.Split(e, ",") {
			if p = strings.TrimSpace(p); p != "" {
				cfg.Endpoints = append(cfg.Endpoints, p)
			}
		}
	}
	if !used {
		for _, f := range []string{"etcd-endpoints", "etcd-ca", "etcd-cert", "etcd-key", "etcd-prefix"} {
			if c.IsSet(f) {
				return cfg, usagef("%s: --%s is for etcd, and %s", cmd, f, unused)
			}
		}
		return cfg, nil
	}
	if len(cfg.Endpoints) == 0 {
		return cfg, usagef("%s: etcd needs --etcd-endpoints (the cluster's client URLs)", cmd)
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return cfg, usagef("%s: --etcd-cert and --etcd-key go together", cmd)
	}
	return cfg, nil
}

// openStore opens one side. The source bbolt file is opened read-only
// (it is never written); both take the file's lock, so a running service
// on it is refused at once.
func openStore(ctx context.Context, s storeSpec, cfg etcdkv.Config, dst bool) (kv.Engine, error) {
	side := "--from"
	if dst {
		side = "--to"
	}
	if s.etcd {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		e, err := etcdkv.Open(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("store migrate: %s etcd at %s: %w", side, strings.Join(cfg.Endpoints, ","), err)
		}
		return e, nil
	}
	if !dst {
		if _, err := os.Stat(s.path); err != nil {
			return nil, usagef("store migrate: --from %s: %v", s, errors.Unwrap(err))
		}
	} else if fi, err := os.Stat(filepath.Dir(s.path)); err != nil || !fi.IsDir() {
		return nil, usagef("store migrate: --to %s: its directory %s does not exist", s, filepath.Dir(s.path))
	}
	e, err := boltkv.Open(s.path, boltkv.Options{ReadOnly: !dst})
	if errors.Is(err, boltkv.ErrLocked) {
		return nil, fmt.Errorf("store migrate: %s %s is held by a running metalhall: stop metalhall serve first (a migration is done offline)", side, s)
	}
	if err != nil {
		return nil, fmt.Errorf("store migrate: %s %w", side, err)
	}
	return e, nil
}
