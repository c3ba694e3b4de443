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
	"github.com/metalhall/metalhall/service"
)

// runInventory serves DHCP through the service's composition root, as
// `metalhall serve` does, and prints, at exit, what was persisted and the
// peak RSS.
func runInventory(dir, iface, server, prefix, first, last string, workers, queue int, log *slog.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The segment exists before the service starts, as an operator's
	// would.
	inv, err := inventory.Open(filepath.Join(dir, "metalhall.db"), inventory.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_, err = inv.CreateSubnet(ctx, inventory.Subnet{Name: "bench", CIDR: prefix, Gateway: server, RangeFirst: first, RangeLast: last})
	inv.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	svc, err := service.New(ctx, service.Config{DataDir: dir, DHCPMode: netboot.ModeReservation, Interface: iface,
		Advertise: netip.MustParseAddr(server), Discovery: true, DHCPWorkers: workers, DHCPQueue: queue, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer svc.Close()
	err = svc.Run(ctx)
	st := svc.Netboot().Stats().DHCP
	leases, _ := svc.Inventory().Leases(context.Background(), time.Now())
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("netbootd(inventory): received=%d replied=%d dropped=%v recorder=%+v leases_persisted=%d peak_rss_mib=%.1f\n",
		st.Received, st.Replied, st.Dropped, svc.RecorderStats(), len(leases), float64(ru.Maxrss)/1024)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
