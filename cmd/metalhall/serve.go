package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
)

func serveFlags() []cli.Flag {
	env := func(n string) []string { return []string{"METALHALL_" + n} }
	return []cli.Flag{
		&cli.StringFlag{Name: "config", EnvVars: env("CONFIG"), Usage: "YAML file with any of these settings (flags and environment win over it)"},
		altsrc.NewStringFlag(&cli.StringFlag{Name: "data-dir", Value: "./metalhall-data", EnvVars: env("DATA_DIR"), Usage: "holds the database, the sealing key, the admin token and the image store"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8280", EnvVars: env("LISTEN"), Usage: "address of the HTTP API"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "text or json"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "debug, info, warn or error"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "netboot-interface", EnvVars: env("NETBOOT_INTERFACE"), Usage: "interface on the provisioning network for DHCP and TFTP"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "dhcp-mode", Value: "off", EnvVars: env("DHCP_MODE"), Usage: "reservation, proxy or off"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "advertise-address", EnvVars: env("ADVERTISE_ADDRESS"), Usage: "address machines reach this service at (boot URLs)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "shutdown-timeout", Value: 30 * time.Second, EnvVars: env("SHUTDOWN_TIMEOUT"), Usage: "how long in-flight requests get on SIGTERM"}),
	}
}

func serveCommand() *cli.Command {
	flags := serveFlags()
	return &cli.Command{
		Name:  "serve",
		Usage: "run the metalhall service",
		Description: `Runs the HTTP API (and, as configured, netboot and image serving) on one
embedded database. On first start it creates DATA_DIR with the database,
a 256-bit sealing key and a bootstrap admin token in DATA_DIR/admin.token.

Settings come from flags, then METALHALL_* environment variables, then the
--config YAML file (keys are the flag names), in that order.

Example:
  metalhall serve --data-dir /var/lib/metalhall --listen 10.0.0.5:8280`,
		Flags:  flags,
		Before: altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config")),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			cfg := serveConfig{
				DataDir: c.String("data-dir"), Listen: c.String("listen"), LogFormat: c.String("log-format"),
				LogLevel: c.String("log-level"), DHCPMode: c.String("dhcp-mode"), ShutdownTimeout: c.Duration("shutdown-timeout"),
			}
			return serve(c.Context, cfg, c.App.ErrWriter)
		},
	}
}

type serveConfig struct {
	DataDir, Listen     string
	LogFormat, LogLevel string
	DHCPMode            string
	ShutdownTimeout     time.Duration
}

func newLogger(w interface{ Write([]byte) (int, error) }, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: use text or json", format)
}

// serve runs the service until ctx is cancelled (SIGTERM/SIGINT), then
// stops taking requests, lets in-flight ones finish, and closes the
// database.
func serve(ctx context.Context, cfg serveConfig, logw interface{ Write([]byte) (int, error) }) error {
	log, err := newLogger(logw, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	switch cfg.DHCPMode {
	case "off":
	case "reservation", "proxy":
		return usagef("--dhcp-mode %s: netboot is not built into this version yet; use off", cfg.DHCPMode)
	default:
		return usagef("--dhcp-mode %q: use reservation, proxy or off", cfg.DHCPMode)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	inv, err := inventory.Open(filepath.Join(cfg.DataDir, "metalhall.db"), inventory.Options{})
	if err != nil {
		if errors.Is(err, inventory.ErrInUse) {
			return fmt.Errorf("data dir %s is already in use by another metalhall: stop it first, or use another --data-dir", cfg.DataDir)
		}
		return err
	}
	defer inv.Close()
	key, created, err := seal.LoadOrCreateKey(filepath.Join(cfg.DataDir, "seal.key"))
	if err != nil {
		return err
	}
	if created {
		log.Info("created sealing key", "path", filepath.Join(cfg.DataDir, "seal.key"))
	}
	sealer, err := seal.New(key)
	if err != nil {
		return err
	}
	if err := bootstrapAdmin(ctx, inv, cfg.DataDir, log); err != nil {
		return err
	}
	srv, err := api.New(api.Config{Store: inv, Sealer: sealer, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("metalhall serving", "listen", ln.Addr().String(), "data_dir", cfg.DataDir, "version", version)

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut short", "err", err)
	}
	log.Info("stopped")
	return nil
}

// bootstrapAdmin creates the first admin token when the database has no
// token at all, and writes it where only the operator can read it.
func bootstrapAdmin(ctx context.Context, inv *inventory.Store, dataDir string, log *slog.Logger) error {
	tokens, err := inv.Tokens(ctx)
	if err != nil {
		return err
	}
	if len(tokens) > 0 {
		return nil
	}
	path := filepath.Join(dataDir, "admin.token")
	secret, t, err := api.NewToken(ctx, inv, inventory.RoleAdmin, "", "bootstrap admin")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	log.Info("created the bootstrap admin token: export METALHALL_TOKEN=$(cat "+path+")", "token_id", t.ID, "path", path)
	return nil
}
