// Package service is metalhall's composition root: it builds every
// component (inventory, sealing key, bootstrap admin token, images, BMC
// controller, job engine, netboot, HTTP listeners, power sync), runs them
// under one errgroup, and closes them.
//
// The lifecycle follows Caddy's: New acquires everything and registers a
// cleanup for each thing it acquired, in order; when New fails half-way it
// runs the cleanups of what it had, and Close is safe on a Service New
// returned with an error as well as on one that ran. Nothing else in the
// tree wires the service by hand: `metalhall serve`, tests and benches all
// come through here.
package service

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/backup"
	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/cluster"
	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/internal/atomicfile"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
	"github.com/metalhall/metalhall/inventory/seal"
	"github.com/metalhall/metalhall/netboot"
	"github.com/metalhall/metalhall/provisioner"
	"github.com/metalhall/metalhall/ui"
)

// Names of the agent's boot environment files in DATA_DIR/bootenv,
// served under /boot/files/.
const (
	BootenvKernel = "vmlinuz"
	BootenvInitrd = "initrd.img"
)

// DefaultProvisionPort is the provisioning listener's port when its
// address is not given.
const DefaultProvisionPort = 8281

// Config is everything the service needs. The zero value of each field is
// its default unless said otherwise.
type Config struct {
	// DataDir holds the database, the sealing key, the admin token, the
	// TLS certificate, images/, bootenv/, ipxe/ and profiles/. Required.
	DataDir string

	// AdminListener carries the API and /metrics. When nil, the service
	// binds AdminAddr (default 127.0.0.1:8280). Tests hand in a listener
	// they already hold, so no port is picked, released and bound again.
	// A listener handed in belongs to the service from New on: Close (or a
	// failed New) closes it.
	AdminListener net.Listener
	AdminAddr     string
	// ProvisionListener carries what machines use: /boot/, the agent's
	// endpoints, /metadata/ and /images/ for agents. When nil, the service
	// binds ProvisionAddr; its default is the advertise address (or, without
	// one, the admin listener's host) on DefaultProvisionPort.
	ProvisionListener net.Listener
	ProvisionAddr     string

	TLS TLSConfig

	// Netboot: DHCPMode off runs no DHCP or TFTP.
	DHCPMode  netboot.Mode
	Interface string
	// Advertise is this service's address on the provisioning network
	// (option 54, boot URLs). Required unless DHCPMode is off.
	Advertise netip.Addr
	IPXEDir   string // default /usr/lib/ipxe
	Discovery bool
	LeaseTime time.Duration // default 1h
	// DHCPRelays are the relay agents whose giaddr is accepted besides
	// relays inside a known subnet.
	DHCPRelays []netip.Prefix
	// DHCP workers and queue size; 0: netboot's defaults.
	DHCPWorkers, DHCPQueue int

	BMCConcurrency int           // default 64
	PowerSync      time.Duration // 0: no power-state sync
	ProfilesDir    string        // default DataDir/profiles
	// Engine's limits and timeouts; the service fills in its logger, URLs,
	// token key, images and profiles.
	Engine provisioner.Config
	// Images: import limits and the URL allow-list; the service fills in
	// its logger and refuses its own listeners as URL destinations.
	Images images.Options

	// PowerAlertShare is the share of a rack's budget (0 < share <= 1)
	// whose crossing by the measured draw raises a rack power alert,
	// checked once per power sync interval; 0: no alerts.
	PowerAlertShare float64

	ShutdownTimeout time.Duration // default 30s
	Logger          *slog.Logger
	Version         string

	// Etcd, when set, keeps the inventory on an etcd cluster instead of
	// DataDir's bbolt file, and makes this instance one of those sharing
	// it (Cluster is then filled in from the engine's client and prefix
	// unless given).
	Etcd *etcdkv.Config

	// Cluster, when set, makes this instance one of several sharing one
	// control plane on an etcd cluster: it registers itself there, runs a
	// job only once it has claimed it (another instance takes the job
	// over when this one dies), and fetches the image blobs it lacks from
	// the others. Every instance must use the same sealing key.
	Cluster *ClusterConfig
}

// ClusterConfig is how an instance joins the others (package cluster).
type ClusterConfig struct {
	Client *clientv3.Client // required; the caller's, left open by Close
	// Prefix of the cluster's keys [cluster.DefaultPrefix]: outside the
	// inventory's prefix, cluster.PrefixFor(it).
	Prefix string
	// InstanceID names this instance among the others [hostname-<random>].
	InstanceID string
	// TTL bounds how long a dead instance's jobs wait for another to take
	// them over [cluster.DefaultTTL].
	TTL time.Duration
}

// ConfigError is a configuration the service cannot run with. Field names
// the setting, in Config's words.
type ConfigError struct {
	Field, Msg string
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Msg }

// ErrDataDirInUse is returned by New when another metalhall holds the
// database.
var ErrDataDirInUse = errors.New("data dir is already in use by another metalhall")

// Service is a built metalhall. Run it once; Close it always.
type Service struct {
	cfg Config
	log *slog.Logger

	inv      *inventory.Store
	reg      *prometheus.Registry
	engine   *provisioner.Engine
	imgs     *images.Store
	ctl      *bmc.Controller
	machines *provisioner.Machines
	recorder *netboot.AsyncRecorder
	nb       *netboot.Server // nil with DHCP off
	member   *cluster.Member // nil without Config.Cluster

	adminLn, provLn   net.Listener
	adminSrv, provSrv *http.Server
	adminURL, provURL string
	tlsInfo           *TLSInfo // nil: plain HTTP on the admin listener

	mu       sync.Mutex
	cleanups []func() error // in acquisition order; Close runs them backwards
	closed   bool
}

// New builds the service: opens the database (failing at once when another
// metalhall holds it), binds both HTTP listeners and the netboot sockets,
// and returns bind errors before anything runs. On error it has released
// whatever it acquired; calling Close on the result is still safe.
func New(ctx context.Context, cfg Config) (s *Service, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s = &Service{cfg: cfg, log: cfg.Logger, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Listeners handed in are the service's from now on, whatever happens.
	for _, ln := range []net.Listener{cfg.AdminListener, cfg.ProvisionListener} {
		if ln != nil {
			s.onClose(closeListener(ln))
		}
	}
	if err := s.provision(ctx); err != nil {
		return s, err
	}
	return s, nil
}

// openInventory opens the store: DataDir's bbolt file, or the etcd
// cluster of Config.Etcd (then this instance joins the others on it).
func (s *Service) openInventory(ctx context.Context) (*inventory.Store, error) {
	cfg := &s.cfg
	if cfg.Etcd == nil {
		inv, err := inventory.Open(filepath.Join(cfg.DataDir, "metalhall.db"), inventory.Options{})
		if errors.Is(err, inventory.ErrInUse) {
			return nil, fmt.Errorf("%w: %s", ErrDataDirInUse, cfg.DataDir)
		}
		return inv, err
	}
	e, err := etcdkv.Open(ctx, *cfg.Etcd)
	if err != nil {
		return nil, err
	}
	inv, err := inventory.OpenEngine(e, inventory.Options{})
	if err != nil {
		e.Close()
		return nil, err
	}
	if cfg.Cluster == nil {
		cfg.Cluster = &ClusterConfig{}
	}
	if cfg.Cluster.Client == nil {
		cfg.Cluster.Client = e.Client()
		if cfg.Cluster.Prefix == "" {
			cfg.Cluster.Prefix = cluster.PrefixFor(e.Prefix())
		}
	}
	return inv, nil
}

// onClose registers a cleanup for something just acquired.
func (s *Service) onClose(f func() error) {
	s.mu.Lock()
	s.cleanups = append(s.cleanups, f)
	s.mu.Unlock()
}

func (s *Service) validate() error {
	c := &s.cfg
	if c.DataDir == "" {
		return &ConfigError{"DataDir", "required"}
	}
	if c.DHCPMode != netboot.ModeOff && (c.Interface == "" || !c.Advertise.IsValid()) {
		return &ConfigError{"DHCPMode", "DHCP needs the netboot interface and the advertise address (this service's address on that network)"}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return &ConfigError{"TLS", "a certificate needs its key and a key its certificate: give both"}
	}
	if c.AdminAddr == "" {
		c.AdminAddr = "127.0.0.1:8280"
	}
	if c.IPXEDir == "" {
		c.IPXEDir = "/usr/lib/ipxe"
	}
	if c.LeaseTime <= 0 {
		c.LeaseTime = time.Hour
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.ProfilesDir == "" {
		c.ProfilesDir = filepath.Join(c.DataDir, "profiles")
	}
	if c.Cluster != nil && c.Cluster.Client == nil && c.Etcd == nil {
		return &ConfigError{"Cluster", "an etcd client is required to share the work with other instances"}
	}
	if c.PowerAlertShare < 0 || c.PowerAlertShare > 1 {
		return &ConfigError{"PowerAlertShare", fmt.Sprintf("%v is not a share of a rack's budget: give one above 0 and at most 1 (e.g. 0.9), or 0 for no alerts", c.PowerAlertShare)}
	}
	return nil
}

// provision acquires every component in dependency order.
func (s *Service) provision(ctx context.Context) error {
	if err := s.validate(); err != nil {
		return err
	}
	cfg, log := &s.cfg, s.log
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	inv, err := s.openInventory(ctx)
	if err != nil {
		return err
	}
	s.inv = inv
	s.onClose(inv.Close)

	keyPath := filepath.Join(cfg.DataDir, "seal.key")
	key, created, err := seal.LoadOrCreateKey(keyPath)
	if err != nil {
		return err
	}
	if created {
		log.Info("created sealing key", "path", keyPath)
	}
	sealer, err := seal.New(key)
	if err != nil {
		return err
	}
	// The inventory remembers which key sealed its secrets: an instance
	// with another key (a second instance given its own, a backup
	// restored beside the wrong key) is refused before it fails on every
	// BMC password.
	if err := inv.CheckSealKey(ctx, deriveKey(key, "metalhall seal key id")[:16]); err != nil {
		if errors.Is(err, inventory.ErrSealKeyMismatch) {
			return fmt.Errorf("%s: %w: give every instance the same seal.key (copy it from an instance already running on this inventory), or the key of the backup this inventory came from", keyPath, err)
		}
		return err
	}
	if err := bootstrapAdmin(ctx, inv, cfg.DataDir, log); err != nil {
		return err
	}

	// Listeners before anything that advertises them: the boot URLs carry
	// the provisioning listener's real port (":0" in tests).
	if err := s.listen(); err != nil {
		return err
	}
	baseURL := s.provURL

	iopts := cfg.Images
	iopts.Logger = log
	iopts.URLPolicy.Refused = images.ServiceDestinations(inv, s.adminLn.Addr(), s.provLn.Addr())
	// Instances fetch blobs from each other's provisioning listener,
	// signing each request with a key derived from the sealing key they
	// share: what the agents already fetch on that network, and nothing
	// an outsider without the key can.
	var peerKey []byte
	if cfg.Cluster != nil {
		m, err := cluster.Join(ctx, cluster.Config{Client: cfg.Cluster.Client, Prefix: cfg.Cluster.Prefix, ID: cfg.Cluster.InstanceID,
			TTL: cfg.Cluster.TTL, APIURL: s.adminURL, ProvisioningURL: s.provURL, Logger: log})
		if err != nil {
			return fmt.Errorf("joining the other instances: %w", err)
		}
		s.member = m
		s.onClose(m.Close)
		peerKey = deriveKey(key, "metalhall peer blobs")
		iopts.Peers = &images.Peers{URLs: m.PeerProvisioningURLs, Key: peerKey}
	}
	imgs, err := images.Open(filepath.Join(cfg.DataDir, "images"), inv, iopts)
	if err != nil {
		return err
	}
	s.imgs = imgs
	if rep, err := imgs.GC(ctx); err != nil {
		log.Warn("image store garbage collection", "err", err)
	} else if rep != nil {
		log.Debug("image store garbage collection", "report", fmt.Sprintf("%+v", *rep))
	}
	s.ctl = bmc.New(bmc.Config{MaxConcurrent: cfg.BMCConcurrency, Logger: log})
	s.onClose(func() error { s.ctl.Close(); return nil })
	if err := s.ctl.CheckIPMITool(); err != nil {
		log.Warn("IPMI machines cannot be controlled", "err", err)
	}
	s.machines = &provisioner.Machines{Inv: inv, Sealer: sealer, Ctl: s.ctl}
	ecfg := cfg.Engine
	ecfg.Logger, ecfg.ServiceURL = log, baseURL
	ecfg.TokenKey = deriveKey(key, "metalhall agent tokens")
	ecfg.Images = provisioner.ImageStore{Inv: inv, Store: imgs, BaseURL: baseURL}
	ecfg.Profiles = provisioner.ProfileDir(cfg.ProfilesDir)
	bootDir := filepath.Join(cfg.DataDir, "bootenv")
	ecfg.BootKernelURL, ecfg.BootInitrdURL = baseURL+"/boot/files/"+BootenvKernel, baseURL+"/boot/files/"+BootenvInitrd
	if _, err := os.Stat(filepath.Join(bootDir, BootenvInitrd)); err != nil {
		log.Warn("no agent boot environment yet: machines cannot be commissioned or provisioned until one is built", "dir", bootDir)
	}
	// Jobs that netboot are refused at once without a boot environment,
	// rather than failing minutes later with the machine left on.
	ecfg.NetbootReady = func(context.Context) error {
		for _, f := range []string{BootenvKernel, BootenvInitrd} {
			if _, err := os.Stat(filepath.Join(bootDir, f)); err != nil {
				return fmt.Errorf("no agent boot environment in %s: build one first", bootDir)
			}
		}
		return nil
	}
	// The boot script carries the job's token: with DHCP on, it is served
	// only once this service has seen the machine netboot.
	ecfg.ScriptAfterDHCP = cfg.DHCPMode != netboot.ModeOff
	ecfg.Sealer = sealer // provision jobs' keys and user data, at rest
	if s.member != nil {
		ecfg.Claims = s.member
	}
	// Agent tokens are used only from their machine's address, as the DHCP
	// view knows it. The view needs the engine (it answers the boot
	// decision in the same lookup), so the engine asks it through addrs,
	// set below, before anything is served.
	var addrs *provisioner.Addresses
	ecfg.AddressOwner = func(ctx context.Context, ip netip.Addr) (net.HardwareAddr, bool) { return addrs.Owner(ctx, ip) }
	engine, err := provisioner.New(inv, s.machines, ecfg)
	if err != nil {
		return err
	}
	s.engine = engine
	if addrs, err = provisioner.NewAddresses(ctx, inv, engine, cfg.LeaseTime); err != nil {
		return err
	}
	s.recorder = netboot.NewAsyncRecorder(&provisioner.BootEvents{Inv: inv}, netboot.AsyncRecorderConfig{Logger: log})
	if err := os.MkdirAll(bootDir, 0o755); err != nil {
		return fmt.Errorf("boot environment dir: %w", err)
	}
	// A copy of the iPXE binaries of our own: the TFTP and HTTP roots are
	// confined with os.Root, and Debian's ipxe.efi is a symlink out of its
	// directory.
	ipxeRoot := filepath.Join(cfg.DataDir, "ipxe")
	if err := netboot.StageIPXE(ipxeRoot, cfg.IPXEDir); err != nil {
		if cfg.DHCPMode != netboot.ModeOff {
			return fmt.Errorf("iPXE binaries from %s: %w (install the Debian package ipxe)", cfg.IPXEDir, err)
		}
		log.Warn("no iPXE binaries to serve", "dir", cfg.IPXEDir, "err", err)
	}
	httpBoot, err := netboot.NewHTTPHandler(netboot.HTTPConfig{Booter: engine, Addresses: addrs, CheckToken: engine.CheckBootToken,
		IPXERoot: ipxeRoot, Files: os.DirFS(bootDir), Recorder: s.recorder, Logger: log})
	if err != nil {
		return err
	}
	s.onClose(httpBoot.Close)
	backups := backup.NewSource(inv, cfg.DataDir, key, cfg.Version, log)
	backups.ProfilesDir = cfg.ProfilesDir // a backup holds the profiles the service reads
	apiSrv, err := api.New(api.Config{Store: inv, Sealer: sealer, Logger: log, Provisioner: engine, BMC: s.machines, Images: imgs, Backups: backups, Registry: s.reg,
		Profiles: provisioner.ProfileDir(cfg.ProfilesDir)})
	if err != nil {
		return err
	}
	s.onClose(apiSrv.Close)

	if cfg.DHCPMode != netboot.ModeOff {
		// One of several instances binds TFTP to its own address: another
		// may run on this host, on another address of the same network.
		var tftpListen netip.AddrPort
		if cfg.Cluster != nil {
			tftpListen = netip.AddrPortFrom(cfg.Advertise, 69)
		}
		nb, err := netboot.NewServer(netboot.Config{Interface: cfg.Interface, Mode: cfg.DHCPMode, Advertise: cfg.Advertise, HTTPBaseURL: baseURL, TFTPListen: tftpListen,
			Discovery: cfg.Discovery, DHCPRelays: cfg.DHCPRelays, TFTPRoot: ipxeRoot, Workers: cfg.DHCPWorkers, QueueSize: cfg.DHCPQueue, Booter: engine, Addresses: addrs, Recorder: s.recorder, Logger: log})
		if err != nil {
			return err
		}
		s.onClose(nb.Close)
		if err := nb.Listen(); err != nil {
			return err
		}
		s.nb = nb
	}

	if err := s.registerMetrics(imgs, httpBoot); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	// The admin listener: the API, /metrics, and image blobs for API tokens.
	adminMux := http.NewServeMux()
	adminMux.Handle("/", apiSrv.Handler())
	adminMux.Handle("/images/", imgs.BlobHandler(images.HandlerOptions{Authorize: apiSrv.AuthorizeImage}))
	// The web console: every page and action is an in-process API request
	// with the session's token, through the same route table and wrapper.
	console, err := ui.New(ui.Config{API: apiSrv.Handler(), Logger: log})
	if err != nil {
		return fmt.Errorf("web console: %w", err)
	}
	adminMux.Handle(ui.Prefix, console)
	// The provisioning listener: only what machines use. Anything else,
	// /api/ and /metrics included, is a plain 404 that touches nothing.
	provMux := http.NewServeMux()
	provMux.Handle("/boot/", httpBoot)
	provMux.Handle(wire.PathPrefix, engine.AgentHandler())
	provMux.Handle("/metadata/", engine.MetadataHandler())
	provMux.Handle("/images/", imgs.BlobHandler(images.HandlerOptions{Authorize: agentOnly(engine), PeerKey: peerKey}))
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	s.adminSrv = &http.Server{Handler: adminMux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	s.adminSrv.RegisterOnShutdown(console.StopLive)
	s.adminSrv.RegisterOnShutdown(apiSrv.StopWaits)
	// Serial console sessions stream until the operator leaves: end them,
	// or shutting down would wait for every one.
	s.adminSrv.RegisterOnShutdown(s.machines.CloseConsoles)
	s.provSrv = &http.Server{Handler: provMux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	return nil
}

// agentOnly admits an agent to the image its job writes; to anyone else,
// API tokens included, a blob on the provisioning listener does not exist.
func agentOnly(engine *provisioner.Engine) func(*http.Request, *inventory.Image) error {
	return func(r *http.Request, img *inventory.Image) error {
		err := engine.AuthorizeImage(r, img)
		if errors.Is(err, provisioner.ErrNotAgent) {
			return fmt.Errorf("image %q: %w", img.Name, inventory.ErrNotFound)
		}
		return err
	}
}

// listen binds (or takes) both listeners, wraps the admin one in TLS when
// the rule says so, and works out the URLs.
func (s *Service) listen() error {
	cfg := &s.cfg
	if s.adminLn = cfg.AdminListener; s.adminLn == nil {
		ln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("admin listener on %s: %w", cfg.AdminAddr, err)
		}
		s.adminLn = ln
		s.onClose(closeListener(ln))
	}
	if s.provLn = cfg.ProvisionListener; s.provLn == nil {
		addr := cfg.ProvisionAddr
		if addr == "" {
			addr = defaultProvisionAddr(cfg.Advertise, s.adminLn.Addr())
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("provisioning listener on %s: %w", addr, err)
		}
		s.provLn = ln
		s.onClose(closeListener(ln))
	}

	tlsCfg, info, err := adminTLS(cfg.TLS, cfg.DataDir, s.adminLn.Addr(), s.log)
	if err != nil {
		return err
	}
	scheme := "http"
	if tlsCfg != nil {
		s.adminLn = tls.NewListener(s.adminLn, tlsCfg)
		s.tlsInfo, scheme = info, "https"
	}
	s.adminURL = scheme + "://" + s.adminLn.Addr().String()
	s.provURL = advertisedURL(cfg.Advertise, s.provLn.Addr())
	return nil
}

// closeListener closes ln and treats "already closed" (the HTTP server
// closed it on shutdown) as done.
func closeListener(ln net.Listener) func() error {
	return func() error {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
}

// defaultProvisionAddr: machines reach the service at the advertise
// address when there is one; otherwise the provisioning listener shares
// the admin listener's host (loopback by default), on its own port.
func defaultProvisionAddr(advertise netip.Addr, admin net.Addr) string {
	port := strconv.Itoa(DefaultProvisionPort)
	if advertise.IsValid() {
		return net.JoinHostPort(advertise.String(), port)
	}
	host, _, err := net.SplitHostPort(admin.String())
	if err != nil {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// advertisedURL is the base URL machines reach the provisioning listener at.
func advertisedURL(advertise netip.Addr, prov net.Addr) string {
	if !advertise.IsValid() {
		return "http://" + prov.String()
	}
	_, port, _ := net.SplitHostPort(prov.String())
	return "http://" + net.JoinHostPort(advertise.String(), port)
}

// AdminURL is where the API answers, e.g. "https://127.0.0.1:8280".
func (s *Service) AdminURL() string { return s.adminURL }

// ProvisionURL is where machines reach the service (boot URLs, agent,
// metadata), e.g. "http://10.1.0.5:8281".
func (s *Service) ProvisionURL() string { return s.provURL }

// TLS describes the admin listener's certificate; nil when it serves plain
// HTTP.
func (s *Service) TLS() *TLSInfo { return s.tlsInfo }

// Inventory is the service's store (tests and benches seed it directly).
func (s *Service) Inventory() *inventory.Store { return s.inv }

// Engine is the service's job engine.
func (s *Service) Engine() *provisioner.Engine { return s.engine }

// Cluster is this instance's membership among the others sharing the
// work, nil without Config.Cluster.
func (s *Service) Cluster() *cluster.Member { return s.member }

// Netboot is the DHCP/TFTP server, nil when DHCP is off.
func (s *Service) Netboot() *netboot.Server { return s.nb }

// RecorderStats are the boot-event recorder's drop counters.
func (s *Service) RecorderStats() netboot.RecorderStats { return s.recorder.Stats() }

// Run serves until ctx is done or a component fails, then stops taking
// requests, gives in-flight ones the shutdown timeout, and stops the
// background work (jobs park where they are persisted). Call it once, and
// Close afterwards.
func (s *Service) Run(ctx context.Context) error {
	log := s.log
	// Background work stops after the HTTP servers have stopped taking
	// requests, not with ctx: in-flight agent reports still reach the engine.
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	bg, bgCtx := errgroup.WithContext(bgCtx)
	bg.Go(func() error { return s.engine.Run(bgCtx) })
	bg.Go(func() error { return s.recorder.Run(bgCtx) })
	if s.member != nil {
		// Every blob the shared catalogue names is fetched here before a
		// machine needs it: the instance that imported an image may be
		// gone by then. An import or delete on any instance is followed
		// by its audit event, which every instance's feed sees; the
		// replicator's own interval catches the rest.
		bg.Go(func() error {
			return s.imgs.Replicate(bgCtx, images.ReplicateOptions{Wake: func() <-chan struct{} {
				ch, _ := s.inv.EventsCommitted()
				return ch
			}})
		})
	}
	if s.nb != nil {
		bg.Go(func() error {
			if err := s.nb.Serve(bgCtx); err != nil {
				return fmt.Errorf("netboot: %w", err)
			}
			return nil
		})
		log.Info("netboot serving", "interface", s.cfg.Interface, "mode", s.cfg.DHCPMode, "advertise", s.cfg.Advertise)
	}
	if s.cfg.PowerSync > 0 {
		bg.Go(func() error { s.ctl.SyncPower(bgCtx, s.machines, s.cfg.PowerSync); return nil })
		if s.cfg.PowerAlertShare > 0 {
			bg.Go(func() error { s.watchRackPower(bgCtx); return nil })
		}
	}

	// The front: both HTTP servers. It ends when ctx ends, or when any
	// component (background ones included) fails.
	front, fctx := errgroup.WithContext(ctx)
	serve := func(name string, hs *http.Server, ln net.Listener) {
		front.Go(func() error {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s listener: %w", name, err)
			}
			return nil
		})
	}
	serve("admin", s.adminSrv, s.adminLn)
	serve("provisioning", s.provSrv, s.provLn)
	front.Go(func() error {
		select {
		case <-fctx.Done():
		case <-bgCtx.Done(): // a background component failed
		}
		log.Info("shutting down: finishing in-flight requests", "timeout", s.cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		for _, hs := range []*http.Server{s.adminSrv, s.provSrv} {
			if err := hs.Shutdown(sctx); err != nil {
				log.Warn("in-flight requests cut short", "err", err)
			}
		}
		return nil
	})
	attrs := []any{"admin", s.adminURL, "provisioning", s.provURL, "data_dir", s.cfg.DataDir, "version", s.cfg.Version}
	if s.tlsInfo != nil {
		attrs = append(attrs, "tls_sha256", s.tlsInfo.Fingerprint)
	}
	log.Info("metalhall serving", attrs...)
	ferr := front.Wait()
	stopBG()
	berr := bg.Wait()
	log.Info("stopped")
	return errors.Join(ferr, berr)
}

// Close releases everything New acquired, in reverse order. It is safe to
// call on a Service whose New failed, more than once, and after Run.
func (s *Service) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cleanups := s.cleanups
	s.mu.Unlock()
	var errs []error
	for i := len(cleanups) - 1; i >= 0; i-- {
		if err := cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
	if err := atomicfile.WriteFile(path, []byte(secret+"\n"), atomicfile.Options{Perm: 0o600}); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	log.Info("created the bootstrap admin token: export METALHALL_TOKEN=$(cat "+path+")", "token_id", t.ID, "path", path)
	return nil
}

// registerMetrics registers each component's own collectors on the
// service's registry (the API registered its own in api.New), plus the Go
// runtime and process collectors.
func (s *Service) registerMetrics(imgs *images.Store, httpBoot *netboot.HTTPHandler) error {
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.recorder.Collector(),
		httpBoot.Collector(),
		s.ctl.Collector(),
		imgs.Collector(),
		s.engine.Collector(),
		s.inv.Collector(),
	}
	if s.nb != nil {
		cs = append(cs, s.nb.Collector())
	}
	if s.member != nil {
		cs = append(cs, s.member.Collector())
	}
	for _, c := range cs {
		if err := s.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
