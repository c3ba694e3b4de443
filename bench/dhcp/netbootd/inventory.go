package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/bench/benchengine"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
	"github.com/metalhall/metalhall/netboot"
	"github.com/metalhall/metalhall/service"
)

// runInventory serves DHCP through the service's composition root, as
// `metalhall serve` does (on an etcd cluster it starts, with etcd), and
// prints, at exit, what was persisted and the peak RSS.
func runInventory(dir string, etcd bool, known int, iface, server, prefix, first, last string, workers, queue int, log *slog.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var etcdCfg *etcdkv.Config
	if etcd {
		c, err := benchengine.StartCluster(ctx, dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer c.Close()
		etcdCfg = &etcdkv.Config{Endpoints: c.Endpoints()}
	}
	// The segment exists before the service starts, as an operator's
	// would.
	inv, err := openInventory(ctx, dir, etcdCfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_, err = inv.CreateSubnet(ctx, inventory.Subnet{Name: "bench", CIDR: prefix, Gateway: server, RangeFirst: first, RangeLast: last})
	if err == nil && known > 0 {
		err = enrollKnown(ctx, inv, known, filepath.Join(dir, "macs.txt"))
	}
	inv.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	svc, err := service.New(ctx, service.Config{DataDir: dir, DHCPMode: netboot.ModeReservation, Interface: iface,
		Advertise: netip.MustParseAddr(server), Discovery: true, DHCPWorkers: workers, DHCPQueue: queue, Logger: log, Etcd: etcdCfg})
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
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("netbootd(inventory, etcd=%v): received=%d replied=%d dropped=%v recorder=%+v leases_persisted=%d peak_rss_mib=%.1f cpu_s=%.2f csw=%d/%d\n",
		etcd, st.Received, st.Replied, st.Dropped, svc.RecorderStats(), len(leases), float64(ru.Maxrss)/1024, cpu.Seconds(), ru.Nvcsw, ru.Nivcsw)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// enrollKnown enrolls n machines, rack by rack, each with an address
// reserved in 10.99.128.0/17, and writes their MACs one a line to macs:
// perfdhcp -M then asks for known machines only, whose answers come from
// the boot view in memory, on either engine.
func enrollKnown(ctx context.Context, inv *inventory.Store, n int, macs string) error {
	if _, err := inv.CreateSite(ctx, inventory.Site{Name: "site"}); err != nil {
		return err
	}
	if _, err := inv.CreateHall(ctx, inventory.Hall{Name: "hall", Site: "site"}); err != nil {
		return err
	}
	if _, err := inv.CreatePhase(ctx, inventory.Phase{Hall: "hall", Number: 1, BudgetW: 1_000_000_000}); err != nil {
		return err
	}
	var list strings.Builder
	for r := 0; r*40 < n; r++ {
		in := inventory.RackImport{Rack: inventory.Rack{Name: fmt.Sprintf("r%03d", r), Hall: "hall", Phase: 1, Units: 48, BudgetW: 440_000}}
		for u := 0; u < 40 && r*40+u < n; u++ {
			i := r*40 + u
			mac := net.HardwareAddr{0x52, 0x54, 1, byte(i >> 16), byte(i >> 8), byte(i)}.String()
			fmt.Fprintln(&list, mac)
			in.Machines = append(in.Machines, inventory.Enrollment{
				Machine: inventory.Machine{Name: fmt.Sprintf("m%05d", i), Rack: in.Rack.Name, Unit: u + 1, Height: 1,
					MACs: []string{mac}, IP: fmt.Sprintf("10.99.%d.%d", 128+i/250, i%250+1), PowerW: 10_000,
					BMC: inventory.BMC{Address: fmt.Sprintf("10.98.%d.%d", i/250, i%250+1), Protocol: inventory.ProtocolRedfish, Username: "root"}},
				SealedPassword: make([]byte, 45),
			})
		}
		if _, err := inv.ImportRack(ctx, in); err != nil {
			return fmt.Errorf("enrolling rack %s: %w", in.Rack.Name, err)
		}
	}
	return os.WriteFile(macs, []byte(list.String()), 0o644)
}

// openInventory opens the bbolt file in dir, or the inventory on etcd.
func openInventory(ctx context.Context, dir string, etcd *etcdkv.Config) (*inventory.Store, error) {
	if etcd == nil {
		return inventory.Open(filepath.Join(dir, "metalhall.db"), inventory.Options{})
	}
	inv, _, err := benchengine.OpenEtcd(ctx, *etcd)
	return inv, err
}
