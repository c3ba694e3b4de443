// Command netbootd runs metalhall's netboot DHCP server alone, for the
// DHCP benchmark (bench/dhcp/run.sh): reservation mode with discovery on,
// so every perfdhcp client (random MACs) gets an address from a dynamic
// range, and boot events go through the real AsyncRecorder into a sink
// that counts and discards them.
//
// With -inventory DIR it runs the service's own path instead: a bbolt
// inventory in DIR, the provisioner's inventory-backed Addresses, the job
// engine as Booter, and boot events and leases persisted to the inventory
// in batches — what `metalhall serve` runs. With -store etcd as well, that
// inventory is on a three-member etcd cluster (Debian's etcd-server) that
// netbootd starts itself, its data dirs in DIR, in netbootd's own network
// namespace: `metalhall serve --store etcd`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/netboot"
)

type discardSink struct{ events, leases atomic.Uint64 }

func (d *discardSink) WriteEvents(_ context.Context, evs []netboot.Event) error {
	d.events.Add(uint64(len(evs)))
	return nil
}

func (d *discardSink) WriteLeases(_ context.Context, ls []netboot.Lease) error {
	d.leases.Add(uint64(len(ls)))
	return nil
}

func main() { os.Exit(run()) }

// run is main without os.Exit, so that the CPU profile is written on every
// way out, the inventory path's included.
func run() int {
	iface := flag.String("iface", "", "interface to serve (SO_BINDTODEVICE)")
	server := flag.String("server", "10.99.0.1", "server address (option 54)")
	prefix := flag.String("prefix", "10.99.0.0/16", "segment")
	first := flag.String("first", "10.99.1.0", "first dynamic address")
	last := flag.String("last", "10.99.255.254", "last dynamic address")
	workers := flag.Int("workers", 4, "DHCP workers")
	queue := flag.Int("queue", 1024, "DHCP queue size")
	tftpRoot := flag.String("tftp-root", "", "also serve this directory over TFTP (port 69)")
	tftpMax := flag.Int("tftp-max", 64, "concurrent TFTP transfers")
	noDHCP := flag.Bool("no-dhcp", false, "TFTP only")
	invDir := flag.String("inventory", "", "use the service's inventory-backed path with a database in this directory")
	known := flag.Int("known", 0, "with -inventory: enroll this many machines with reserved addresses first, and write their MACs to DIR/macs.txt (for perfdhcp -M)")
	storeKind := flag.String("store", "bolt", "with -inventory: bolt, or etcd (a three-member cluster started in the -inventory directory)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "cpu profile:", err)
			return 2
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *invDir != "" {
		if *storeKind != "bolt" && *storeKind != "etcd" {
			fmt.Fprintf(os.Stderr, "-store %q: use bolt or etcd\n", *storeKind)
			return 2
		}
		if *known < 0 || *known > 32_000 {
			fmt.Fprintf(os.Stderr, "-known %d: give 0 to 32000 machines (their addresses are reserved in 10.99.128.0/17)\n", *known)
			return 2
		}
		return runInventory(*invDir, *storeKind == "etcd", *known, *iface, *server, *prefix, *first, *last, *workers, *queue, log)
	}

	addrs := netboot.NewMemoryAddresses()
	sv := netip.MustParseAddr(*server)
	if err := addrs.AddSegment(netboot.Subnet{Prefix: netip.MustParsePrefix(*prefix), Gateway: sv, LeaseTime: time.Hour},
		netip.Addr{}, netip.MustParseAddr(*first), netip.MustParseAddr(*last)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sink := &discardSink{}
	rec := netboot.NewAsyncRecorder(sink, netboot.AsyncRecorderConfig{Logger: log})
	mode := netboot.ModeReservation
	if *noDHCP {
		mode = netboot.ModeOff
	}
	srv, err := netboot.NewServer(netboot.Config{
		TFTPRoot: *tftpRoot, TFTPMaxConcurrent: *tftpMax,
		Interface: *iface, Mode: mode, Advertise: sv, HTTPBaseURL: "http://" + *server + ":8080",
		Discovery: true, Workers: *workers, QueueSize: *queue,
		Booter: netboot.NewMemoryBooter(), Addresses: addrs, Recorder: rec, Logger: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go rec.Run(ctx)
	err = srv.Run(ctx)
	st := srv.Stats().DHCP
	fmt.Printf("netbootd: tftp=%+v received=%d replied=%d dropped=%v recorder=%+v events_written=%d leases_written=%d\n",
		srv.Stats().TFTP, st.Received, st.Replied, st.Dropped, rec.Stats(), sink.events.Load(), sink.leases.Load())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
