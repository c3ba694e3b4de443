package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
	"github.com/metalhall/metalhall/provisioner"
)

// nopBMC: the benchmark runs no jobs, so the engine never calls it.
type nopBMC struct{}

func (nopBMC) SetBootDevice(context.Context, *inventory.Machine, inventory.BootDevice, bool) error {
	return nil
}
func (nopBMC) SetPower(context.Context, *inventory.Machine, inventory.PowerAction) error { return nil }
func (nopBMC) PowerState(context.Context, *inventory.Machine) (string, error)            { return "on", nil }

// runInventory serves DHCP the way `metalhall serve` does and prints, at
// exit, what was persisted and the peak RSS.
func runInventory(dir, iface, server, prefix, first, last string, workers, queue int, log *slog.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	inv, err := inventory.Open(filepath.Join(dir, "metalhall.db"), inventory.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer inv.Close()
	if _, err := inv.CreateSubnet(ctx, inventory.Subnet{Name: "bench", CIDR: prefix, Gateway: server, RangeFirst: first, RangeLast: last}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	engine, err := provisioner.New(inv, nopBMC{}, provisioner.Config{TokenKey: make([]byte, 32), Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	addrs, err := provisioner.NewAddresses(ctx, inv, engine, time.Hour)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rec := netboot.NewAsyncRecorder(provisioner.BootEvents{Inv: inv}, netboot.AsyncRecorderConfig{Logger: log})
	srv, err := netboot.NewServer(netboot.Config{Interface: iface, Mode: netboot.ModeReservation, Advertise: netip.MustParseAddr(server),
		HTTPBaseURL: "http://" + server + ":8280", Discovery: true, Workers: workers, QueueSize: queue,
		Booter: engine, Addresses: addrs, Recorder: rec, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	recDone := make(chan struct{})
	go func() { rec.Run(ctx); close(recDone) }()
	err = srv.Run(ctx)
	<-recDone
	st := srv.Stats().DHCP
	leases, _ := inv.Leases(context.Background(), time.Now())
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("netbootd(inventory): received=%d replied=%d dropped=%v recorder=%+v leases_persisted=%d peak_rss_mib=%.1f\n",
		st.Received, st.Replied, st.Dropped, rec.Stats(), len(leases), float64(ru.Maxrss)/1024)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
