package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
	"github.com/metalhall/metalhall/netboot"
	"github.com/metalhall/metalhall/provisioner"
	"github.com/metalhall/metalhall/service"
)

func serveFlags() []cli.Flag {
	env := func(n string) []string { return []string{"METALHALL_" + n} }
	return []cli.Flag{
		&cli.StringFlag{Name: "config", EnvVars: env("CONFIG"), Usage: "YAML file with any of these settings (flags and environment win over it)"},
		altsrc.NewStringFlag(&cli.StringFlag{Name: "data-dir", Value: "./metalhall-data", EnvVars: env("DATA_DIR"), Usage: "holds the database, the sealing key, the admin token, the TLS certificate and the image store"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8280", EnvVars: env("LISTEN"), Usage: "address of the admin listener: the API and /metrics (TLS unless it is loopback)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "provision-listen", EnvVars: env("PROVISION_LISTEN"), Usage: "address of the provisioning listener machines reach: boot files, agent, metadata, images (default: ADVERTISE_ADDRESS:8281, or the --listen host on port 8281)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-cert", EnvVars: env("TLS_CERT"), Usage: "PEM certificate of the admin listener (default: one generated into DATA_DIR at first start)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-key", EnvVars: env("TLS_KEY"), Usage: "PEM private key of --tls-cert"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "tls", EnvVars: env("TLS"), Usage: "serve TLS on the admin listener even on loopback"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "insecure", EnvVars: env("INSECURE"), Usage: "serve the admin listener over plain HTTP on a non-loopback address (tokens cross the network in the clear)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "text or json"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "debug, info, warn or error"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "netboot-interface", EnvVars: env("NETBOOT_INTERFACE"), Usage: "interface on the provisioning network for DHCP and TFTP"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "dhcp-mode", Value: "off", EnvVars: env("DHCP_MODE"), Usage: "reservation, proxy or off"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "advertise-address", EnvVars: env("ADVERTISE_ADDRESS"), Usage: "address machines reach this service at (DHCP server identifier, boot URLs)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ipxe-dir", Value: "/usr/lib/ipxe", EnvVars: env("IPXE_DIR"), Usage: "iPXE binaries served over TFTP and HTTP (Debian package ipxe)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "dhcp-relay", EnvVars: env("DHCP_RELAY"), Usage: "address or prefix of a DHCP relay whose giaddr is accepted (repeatable); relays inside a known subnet need none"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "discovery", EnvVars: env("DISCOVERY"), Usage: "give unknown MACs an address from the subnet's dynamic range and record them"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "lease-time", Value: time.Hour, EnvVars: env("LEASE_TIME"), Usage: "DHCP lease time"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "bmc-concurrency", Value: 64, EnvVars: env("BMC_CONCURRENCY"), Usage: "BMC operations in flight at once (one per BMC)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "power-sync-interval", Value: time.Minute, EnvVars: env("POWER_SYNC_INTERVAL"), Usage: "how often every BMC's power state is read (0: never)"}),
		altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "power-alert-share", Value: 0.9, EnvVars: env("POWER_ALERT_SHARE"), Usage: "raise a rack power alert (event and metric) when a rack's measured draw reaches this share of its budget; cleared 5 points below (0: no alerts)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "energise-wait", Value: time.Hour, EnvVars: env("ENERGISE_WAIT"), Usage: "how long a commission, provision or release waits for its rack's power budget to allow powering the machine on before it fails"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-jobs", Value: 64, EnvVars: env("MAX_JOBS"), Usage: "jobs running at once"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-jobs-per-rack", Value: 8, EnvVars: env("MAX_JOBS_PER_RACK"), Usage: "jobs running at once in one rack"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-image-streams", Value: 32, EnvVars: env("MAX_IMAGE_STREAMS"), Usage: "machines streaming images at once"}),
		altsrc.NewInt64Flag(&cli.Int64Flag{Name: "image-max-size-gib", Value: images.DefaultMaxImageSize >> 30, EnvVars: env("IMAGE_MAX_SIZE_GIB"), Usage: "largest uncompressed image an import accepts, GiB"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "image-imports", Value: images.DefaultMaxImports, EnvVars: env("IMAGE_IMPORTS"), Usage: "image imports running at once; more are refused"}),
		altsrc.NewInt64Flag(&cli.Int64Flag{Name: "image-tenant-quota-gib", Value: images.DefaultTenantQuota >> 30, EnvVars: env("IMAGE_TENANT_QUOTA_GIB"), Usage: "stored image bytes per tenant, GiB (-1: no quota)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "image-url-allow", EnvVars: env("IMAGE_URL_ALLOW"), Usage: "CIDR, address or host name `image import --url` may fetch from (repeatable; none: URL import is off)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "boot-timeout", Value: 5 * time.Minute, EnvVars: env("BOOT_TIMEOUT"), Usage: "power cycle → agent calls home"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "stall-timeout", Value: 5 * time.Minute, EnvVars: env("STALL_TIMEOUT"), Usage: "longest silence of an agent writing or wiping"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "metadata-timeout", Value: 15 * time.Minute, EnvVars: env("METADATA_TIMEOUT"), Usage: "disk boot → installed OS fetches its metadata"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "profiles-dir", EnvVars: env("PROFILES_DIR"), Usage: "hardware profiles, NAME.yaml (default DATA_DIR/profiles)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "store", Value: "bolt", EnvVars: env("STORE"), Usage: "where the inventory lives: bolt (DATA_DIR/metalhall.db, this process alone) or etcd (a cluster several instances share; --etcd-*)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "etcd-endpoints", EnvVars: env("ETCD_ENDPOINTS"), Usage: "with --store etcd: the cluster's client URLs, e.g. https://10.0.0.1:2379 (repeatable or comma-separated)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "etcd-ca", EnvVars: env("ETCD_CA"), Usage: "with --store etcd: PEM CA bundle the members' certificates chain to"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "etcd-cert", EnvVars: env("ETCD_CERT"), Usage: "with --store etcd: PEM client certificate"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "etcd-key", EnvVars: env("ETCD_KEY"), Usage: "with --store etcd: PEM key of the client certificate"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "etcd-prefix", Value: "/metalhall/", EnvVars: env("ETCD_PREFIX"), Usage: "with --store etcd: the key prefix of this inventory (one per site)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "instance-id", EnvVars: env("INSTANCE_ID"), Usage: "with --store etcd: this instance's name among the others (default: host name and a random suffix)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "takeover-after", Value: 10 * time.Second, EnvVars: env("TAKEOVER_AFTER"), Usage: "with --store etcd: how long a dead instance's jobs wait before another takes them over (its etcd lease's TTL)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "shutdown-timeout", Value: 30 * time.Second, EnvVars: env("SHUTDOWN_TIMEOUT"), Usage: "how long in-flight requests get on SIGTERM"}),
	}
}

func serveCommand() *cli.Command {
	flags := serveFlags()
	return &cli.Command{
		Name:  "serve",
		Usage: "run the metalhall service",
		Description: `Runs the admin listener (the API and /metrics) and the provisioning
listener (what machines fetch: boot scripts and files, the agent's endpoints,
metadata, images), and, as configured, DHCP and TFTP, on one embedded
database. On first start it creates DATA_DIR with the database, a 256-bit
sealing key and a bootstrap admin token in DATA_DIR/admin.token.

With --store etcd the inventory lives on an etcd cluster that several
instances share: each serves the API and netboot on its own addresses,
runs the jobs it claims, and takes over a dead instance's jobs after
--takeover-after. Every instance needs the same DATA_DIR/seal.key (copy
it from the first); the rest of DATA_DIR (boot environment, image blobs,
TLS certificate) is each instance's own. See docs/ha.md.

The admin listener serves TLS unless it is bound to loopback (or --insecure
is given): the --tls-cert certificate, or one generated into DATA_DIR at
first start whose SHA-256 fingerprint is logged and written to
DATA_DIR/tls.fingerprint for the CLI to pin (--tls-fingerprint).

Settings come from flags, then METALHALL_* environment variables, then the
--config YAML file (keys are the flag names), in that order.

Socket activation (sd_listen_fds): listeners passed with LISTEN_FDS and
named "admin" or "provisioning" in LISTEN_FDNAMES (a systemd .socket unit's
FileDescriptorName=) are used instead of --listen and --provision-listen.

Example:
  metalhall serve --data-dir /var/lib/metalhall --listen 10.0.0.5:8280 \
                  --advertise-address 10.1.0.5    # provisioning on 10.1.0.5:8281`,
		Flags:  flags,
		Before: altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config")),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			log, err := newLogger(c.App.ErrWriter, c.String("log-format"), c.String("log-level"))
			if err != nil {
				return err
			}
			cfg, err := serviceConfig(c)
			if err != nil {
				return err
			}
			cfg.Logger = log
			// Listeners passed by socket activation win over --listen and
			// --provision-listen: whoever passed them chose the address.
			if cfg.AdminListener, cfg.ProvisionListener, err = activatedListeners(); err != nil {
				return err
			}
			return serve(c.Context, cfg)
		},
	}
}

// serviceConfig turns the serve flags into the service's configuration,
// refusing values that cannot be right with the flag's name.
func serviceConfig(c *cli.Context) (service.Config, error) {
	mode, ok := map[string]netboot.Mode{"off": netboot.ModeOff, "reservation": netboot.ModeReservation, "proxy": netboot.ModeProxy}[c.String("dhcp-mode")]
	if !ok {
		return service.Config{}, usagef("--dhcp-mode %q: use reservation, proxy or off", c.String("dhcp-mode"))
	}
	var adv netip.Addr
	if a := c.String("advertise-address"); a != "" {
		var err error
		if adv, err = netip.ParseAddr(a); err != nil {
			return service.Config{}, usagef("--advertise-address %q is not an IP address", a)
		}
	}
	if mode != netboot.ModeOff && (c.String("netboot-interface") == "" || !adv.IsValid()) {
		return service.Config{}, usagef("--dhcp-mode %s needs --netboot-interface and --advertise-address (this service's address on that network)", c.String("dhcp-mode"))
	}
	if (c.String("tls-cert") == "") != (c.String("tls-key") == "") {
		return service.Config{}, usagef("--tls-cert and --tls-key go together: give both, or neither for a generated certificate")
	}
	if c.Bool("insecure") && (c.Bool("tls") || c.String("tls-cert") != "") {
		return service.Config{}, usagef("--insecure turns TLS off: drop it, or drop --tls / --tls-cert")
	}
	var relays []netip.Prefix
	for _, r := range c.StringSlice("dhcp-relay") {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			a, aerr := netip.ParseAddr(r)
			if aerr != nil || !a.Is4() {
				return service.Config{}, usagef("--dhcp-relay %q: give an IPv4 address or prefix, e.g. 10.1.7.1 or 10.1.0.0/16", r)
			}
			p = netip.PrefixFrom(a, 32)
		}
		relays = append(relays, p.Masked())
	}
	urlPolicy, err := images.ParseURLAllow(c.StringSlice("image-url-allow"))
	if err != nil {
		return service.Config{}, usagef("--image-url-allow: %v", err)
	}
	if share := c.Float64("power-alert-share"); share < 0 || share > 1 {
		return service.Config{}, usagef("--power-alert-share %v: give a share of a rack's budget above 0 and at most 1 (e.g. 0.9), or 0 for no alerts", share)
	}
	if c.Duration("energise-wait") <= 0 {
		return service.Config{}, usagef("--energise-wait must be positive (e.g. 1h)")
	}
	quota := c.Int64("image-tenant-quota-gib")
	if c.Int64("image-max-size-gib") <= 0 || c.Int("image-imports") <= 0 || quota == 0 || quota < -1 {
		return service.Config{}, usagef("--image-max-size-gib and --image-imports must be positive, --image-tenant-quota-gib positive or -1 (no quota)")
	}
	if quota > 0 {
		quota <<= 30
	}
	var etcd *etcdkv.Config
	var clusterCfg *service.ClusterConfig
	switch c.String("store") {
	case "bolt":
		if _, err := etcdConfig(c, false, "serve", "--store is bolt"); err != nil {
			return service.Config{}, err
		}
		for _, f := range []string{"instance-id", "takeover-after"} {
			if c.IsSet(f) {
				return service.Config{}, usagef("serve: --%s is for instances sharing an etcd store, and --store is bolt", f)
			}
		}
	case "etcd":
		ec, err := etcdConfig(c, true, "serve", "")
		if err != nil {
			return service.Config{}, err
		}
		if d := c.Duration("takeover-after"); d < 2*time.Second {
			return service.Config{}, usagef("--takeover-after %v: give at least 2s (etcd leases are granted in seconds; a short one expires on a busy instance)", d)
		}
		etcd = &ec
		clusterCfg = &service.ClusterConfig{InstanceID: c.String("instance-id"), TTL: c.Duration("takeover-after")}
	default:
		return service.Config{}, usagef("--store %q: use bolt or etcd", c.String("store"))
	}
	return service.Config{
		Etcd: etcd, Cluster: clusterCfg,
		DataDir: c.String("data-dir"), AdminAddr: c.String("listen"), ProvisionAddr: c.String("provision-listen"),
		TLS:      service.TLSConfig{CertFile: c.String("tls-cert"), KeyFile: c.String("tls-key"), Force: c.Bool("tls"), Insecure: c.Bool("insecure")},
		DHCPMode: mode, Interface: c.String("netboot-interface"), Advertise: adv, IPXEDir: c.String("ipxe-dir"),
		Discovery: c.Bool("discovery"), DHCPRelays: relays, LeaseTime: c.Duration("lease-time"),
		BMCConcurrency: c.Int("bmc-concurrency"), PowerSync: c.Duration("power-sync-interval"), ProfilesDir: c.String("profiles-dir"),
		PowerAlertShare: c.Float64("power-alert-share"),
		Engine: provisioner.Config{MaxJobs: c.Int("max-jobs"), MaxPerRack: c.Int("max-jobs-per-rack"),
			MaxImageStreams: c.Int("max-image-streams"), BootTimeout: c.Duration("boot-timeout"),
			StallTimeout: c.Duration("stall-timeout"), MetadataTimeout: c.Duration("metadata-timeout"), EnergiseWait: c.Duration("energise-wait")},
		Images: images.Options{MaxImageSize: c.Int64("image-max-size-gib") << 30, MaxImports: c.Int("image-imports"),
			TenantQuota: quota, URLPolicy: urlPolicy},
		ShutdownTimeout: c.Duration("shutdown-timeout"), Version: version,
	}, nil
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
func serve(ctx context.Context, cfg service.Config) error {
	// New releases what it took when it fails; once it succeeded, Close
	// releases everything, also after Run failed.
	svc, err := service.New(ctx, cfg)
	if err != nil {
		if errors.Is(err, service.ErrDataDirInUse) {
			return fmt.Errorf("data dir %s is already in use by another metalhall: stop it first, or use another --data-dir", cfg.DataDir)
		}
		return err
	}
	defer svc.Close()
	// New has bound every listener: connections queue from now on, so
	// systemd (Type=notify) may start what depends on the service.
	if err := sdNotify(readyState(svc.AdminURL(), svc.ProvisionURL())); err != nil && cfg.Logger != nil {
		cfg.Logger.Warn("could not tell systemd the service is ready", "err", err)
	}
	return svc.Run(ctx)
}
