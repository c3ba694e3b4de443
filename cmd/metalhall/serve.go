package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
	"github.com/metalhall/metalhall/netboot"
	"github.com/metalhall/metalhall/provisioner"
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
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ipxe-dir", Value: "/usr/lib/ipxe", EnvVars: env("IPXE_DIR"), Usage: "iPXE binaries served over TFTP and HTTP (Debian package ipxe)"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "discovery", EnvVars: env("DISCOVERY"), Usage: "give unknown MACs an address from the subnet's dynamic range and record them"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "lease-time", Value: time.Hour, EnvVars: env("LEASE_TIME"), Usage: "DHCP lease time"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "bmc-concurrency", Value: 64, EnvVars: env("BMC_CONCURRENCY"), Usage: "BMC operations in flight at once (one per BMC)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "power-sync-interval", Value: time.Minute, EnvVars: env("POWER_SYNC_INTERVAL"), Usage: "how often every BMC's power state is read (0: never)"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-jobs", Value: 64, EnvVars: env("MAX_JOBS"), Usage: "jobs running at once"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-jobs-per-rack", Value: 8, EnvVars: env("MAX_JOBS_PER_RACK"), Usage: "jobs running at once in one rack"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-image-streams", Value: 32, EnvVars: env("MAX_IMAGE_STREAMS"), Usage: "machines streaming images at once"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "boot-timeout", Value: 5 * time.Minute, EnvVars: env("BOOT_TIMEOUT"), Usage: "power cycle → agent calls home"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "stall-timeout", Value: 5 * time.Minute, EnvVars: env("STALL_TIMEOUT"), Usage: "longest silence of an agent writing or wiping"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "metadata-timeout", Value: 15 * time.Minute, EnvVars: env("METADATA_TIMEOUT"), Usage: "disk boot → installed OS fetches its metadata"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "profiles-dir", EnvVars: env("PROFILES_DIR"), Usage: "hardware profiles, NAME.yaml (default DATA_DIR/profiles)"}),
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
				Advertise: c.String("advertise-address"), BMCConcurrency: c.Int("bmc-concurrency"),
				Interface: c.String("netboot-interface"), IPXEDir: c.String("ipxe-dir"), Discovery: c.Bool("discovery"), LeaseTime: c.Duration("lease-time"),
				PowerSync: c.Duration("power-sync-interval"), ProfilesDir: c.String("profiles-dir"),
				Engine: provisioner.Config{MaxJobs: c.Int("max-jobs"), MaxPerRack: c.Int("max-jobs-per-rack"),
					MaxImageStreams: c.Int("max-image-streams"), BootTimeout: c.Duration("boot-timeout"),
					StallTimeout: c.Duration("stall-timeout"), MetadataTimeout: c.Duration("metadata-timeout")},
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
	Advertise           string
	BMCConcurrency      int
	PowerSync           time.Duration
	ProfilesDir         string
	Engine              provisioner.Config
	Interface, IPXEDir  string
	Discovery           bool
	LeaseTime           time.Duration
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
	mode, ok := map[string]netboot.Mode{"off": netboot.ModeOff, "reservation": netboot.ModeReservation, "proxy": netboot.ModeProxy}[cfg.DHCPMode]
	if !ok {
		return usagef("--dhcp-mode %q: use reservation, proxy or off", cfg.DHCPMode)
	}
	if mode != netboot.ModeOff && (cfg.Interface == "" || cfg.Advertise == "") {
		return usagef("--dhcp-mode %s needs --netboot-interface and --advertise-address (this service's address on that network)", cfg.DHCPMode)
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
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	baseURL, err := advertisedURL(cfg.Advertise, ln.Addr())
	if err != nil {
		ln.Close()
		return err
	}

	imgs, err := images.Open(filepath.Join(cfg.DataDir, "images"), inv, images.Options{Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	if rep, err := imgs.GC(ctx); err != nil {
		log.Warn("image store garbage collection", "err", err)
	} else if rep != nil {
		log.Debug("image store garbage collection", "report", fmt.Sprintf("%+v", *rep))
	}
	ctl := bmc.New(bmc.Config{MaxConcurrent: cfg.BMCConcurrency, Logger: log})
	if err := ctl.CheckIPMITool(); err != nil {
		log.Warn("IPMI machines cannot be controlled", "err", err)
	}
	machines := &provisioner.Machines{Inv: inv, Sealer: sealer, Ctl: ctl}
	ecfg := cfg.Engine
	ecfg.Logger, ecfg.ServiceURL = log, baseURL
	ecfg.TokenKey = deriveKey(key, "metalhall agent tokens")
	ecfg.Images = provisioner.ImageStore{Inv: inv, Store: imgs, BaseURL: baseURL}
	if cfg.ProfilesDir == "" {
		cfg.ProfilesDir = filepath.Join(cfg.DataDir, "profiles")
	}
	ecfg.Profiles = provisioner.ProfileDir(cfg.ProfilesDir)
	bootDir := filepath.Join(cfg.DataDir, "bootenv")
	ecfg.BootKernelURL, ecfg.BootInitrdURL = baseURL+"/boot/files/"+bootenvKernel, baseURL+"/boot/files/"+bootenvInitrd
	if _, err := os.Stat(filepath.Join(bootDir, bootenvInitrd)); err != nil {
		log.Warn("no agent boot environment yet: machines cannot be commissioned or provisioned until 'metalhall bootenv build' writes one", "dir", bootDir)
	}
	// Jobs that netboot are refused at once without a boot environment,
	// rather than failing minutes later with the machine left on.
	ecfg.NetbootReady = func(context.Context) error {
		for _, f := range []string{bootenvKernel, bootenvInitrd} {
			if _, err := os.Stat(filepath.Join(bootDir, f)); err != nil {
				return fmt.Errorf("no agent boot environment in %s: build one with 'metalhall bootenv build'", bootDir)
			}
		}
		return nil
	}
	ecfg.ScriptAfterDHCP = mode != netboot.ModeOff
	ecfg.Sealer = sealer // provision jobs' keys and user data, at rest
	addrs, err := provisioner.NewAddresses(ctx, inv, cfg.LeaseTime)
	if err != nil {
		ln.Close()
		return err
	}
	// Agent tokens are used only from their machine's address, as the
	// DHCP view knows it.
	ecfg.AddressOwner = addrs.Owner
	engine, err := provisioner.New(inv, machines, ecfg)
	if err != nil {
		ln.Close()
		return err
	}
	recorder := netboot.NewAsyncRecorder(provisioner.BootEvents{Inv: inv}, netboot.AsyncRecorderConfig{Logger: log})
	os.MkdirAll(bootDir, 0o755)
	// A copy of the iPXE binaries of our own: the TFTP and HTTP roots are
	// confined with os.Root, and Debian's ipxe.efi is a symlink out of its
	// directory.
	ipxeRoot := filepath.Join(cfg.DataDir, "ipxe")
	if err := netboot.StageIPXE(ipxeRoot, cfg.IPXEDir); err != nil {
		if mode != netboot.ModeOff {
			ln.Close()
			return fmt.Errorf("iPXE binaries: %w (install the Debian package ipxe, or set --ipxe-dir)", err)
		}
		log.Warn("no iPXE binaries to serve", "dir", cfg.IPXEDir, "err", err)
	}
	httpBoot, err := netboot.NewHTTPHandler(netboot.HTTPConfig{Booter: engine, Addresses: addrs, CheckToken: engine.CheckBootToken,
		IPXERoot: ipxeRoot, Files: os.DirFS(bootDir), Recorder: recorder, Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	defer httpBoot.Close()
	srv, err := api.New(api.Config{Store: inv, Sealer: sealer, Logger: log, Provisioner: engine, BMC: machines, Images: imgs})
	if err != nil {
		ln.Close()
		return err
	}
	srv.Handle("/images/", imgs.BlobHandler(images.HandlerOptions{Authorize: func(r *http.Request, img *inventory.Image) error {
		if err := engine.AuthorizeImage(r, img); !errors.Is(err, provisioner.ErrNotAgent) {
			return err
		}
		return srv.AuthorizeImage(r, img)
	}}))
	srv.Handle(wire.PathPrefix, engine.AgentHandler())
	srv.Handle("/boot/", httpBoot)
	srv.Handle("/metadata/", engine.MetadataHandler())

	// Background work: the job engine and the power-state sync. Both stop
	// with runCtx, after the HTTP server has stopped taking requests.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); engine.Run(runCtx) }()
	bg.Add(1)
	go func() { defer bg.Done(); recorder.Run(runCtx) }()
	if mode != netboot.ModeOff {
		adv, _ := netip.ParseAddr(cfg.Advertise)
		nb, err := netboot.NewServer(netboot.Config{Interface: cfg.Interface, Mode: mode, Advertise: adv, HTTPBaseURL: baseURL,
			Discovery: cfg.Discovery, TFTPRoot: ipxeRoot, Booter: engine, Addresses: addrs, Recorder: recorder, Logger: log})
		if err != nil {
			ln.Close()
			return err
		}
		errc := make(chan error, 1)
		bg.Add(1)
		go func() {
			defer bg.Done()
			err := nb.Run(runCtx)
			if err != nil && runCtx.Err() == nil {
				log.Error("netboot stopped", "err", err)
			}
			errc <- err
		}()
		select { // a DHCP or TFTP port that cannot be bound fails the start
		case err := <-errc:
			ln.Close()
			return fmt.Errorf("netboot: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
		log.Info("netboot serving", "interface", cfg.Interface, "mode", cfg.DHCPMode, "advertise", cfg.Advertise)
	}
	if cfg.PowerSync > 0 {
		bg.Add(1)
		go func() { defer bg.Done(); ctl.SyncPower(runCtx, machines, cfg.PowerSync) }()
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
	// Jobs park where they are persisted and resume on the next start.
	stopRun()
	bg.Wait()
	log.Info("stopped")
	return nil
}

// advertisedURL is the base URL machines reach the service at.
func advertisedURL(advertise string, listen net.Addr) (string, error) {
	_, port, _ := net.SplitHostPort(listen.String())
	if advertise == "" {
		return "http://" + listen.String(), nil
	}
	if ip := net.ParseIP(advertise); ip == nil {
		return "", usagef("--advertise-address %q is not an IP address", advertise)
	}
	return "http://" + net.JoinHostPort(advertise, port), nil
}

// deriveKey derives a purpose-bound key from the sealing key, so one
// secret file serves both without one use weakening the other.
func deriveKey(key []byte, purpose string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return m.Sum(nil)
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
