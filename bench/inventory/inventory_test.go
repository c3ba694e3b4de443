// Package inventory_test benchmarks the inventory at data-centre scale:
// 100,000 machines (ten 100-MW-class halls of 10,000 machines), imported
// rack by rack as technicians would, then the lookups the service does
// most.
//
//	go test -run '^$' -bench . -benchmem ./bench/inventory/
//
// METALHALL_BENCH_ENGINE=etcd runs it on a three-member etcd cluster
// instead of a bbolt file (package bench/benchengine);
// METALHALL_BENCH_MACHINES=N imports N machines (a multiple of 400: ten
// halls of 40-machine racks) instead of 100,000. run.sh runs both engines
// in one run and prints them side by side.
package inventory_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/bench/benchengine"
	"github.com/metalhall/metalhall/inventory"
)

const (
	halls          = 10
	machinesOfRack = 40
)

// racksPerHall and total are 250 and 100,000 unless
// METALHALL_BENCH_MACHINES says otherwise.
var racksPerHall, total = 250, 100_000

var (
	setupOnce  sync.Once
	store      *benchengine.Store
	setupErr   error
	importTime time.Duration
	dbBytes    int64
	benchDir   string // the bbolt file or the etcd members' data dirs
)

func mac(i int) string {
	return net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}.String()
}

func rackName(h, r int) string     { return fmt.Sprintf("h%02d-r%03d", h, r) }
func machineName(i int) string     { return fmt.Sprintf("gpu-%06d", i) }
func hallName(h int) string        { return fmt.Sprintf("hall%02d", h) }
func machineIndex(h, r, u int) int { return (h*racksPerHall+r)*machinesOfRack + u }

// setup builds the 100,000-machine database once per benchmark run.
func setup(b *testing.B) *inventory.Store {
	setupOnce.Do(func() {
		dir, err := os.MkdirTemp("", "metalhall-bench-")
		if err != nil {
			setupErr = err
			return
		}
		benchDir = dir
		ctx := context.Background()
		s, err := benchengine.Open(ctx, dir)
		if err != nil {
			setupErr = err
			return
		}
		store = s
		if _, err := s.CreateSite(ctx, inventory.Site{Name: "site"}); err != nil {
			setupErr = err
			return
		}
		start := time.Now()
		for h := 0; h < halls; h++ {
			if _, err := s.CreateHall(ctx, inventory.Hall{Name: hallName(h), Site: "site"}); err != nil {
				setupErr = err
				return
			}
			if _, err := s.CreatePhase(ctx, inventory.Phase{Hall: hallName(h), Number: 1, BudgetW: 120_000_000}); err != nil {
				setupErr = err
				return
			}
			for r := 0; r < racksPerHall; r++ {
				in := inventory.RackImport{Rack: inventory.Rack{Name: rackName(h, r), Hall: hallName(h), Phase: 1, Units: 48, BudgetW: 440_000}}
				for u := 0; u < machinesOfRack; u++ {
					i := machineIndex(h, r, u)
					in.Machines = append(in.Machines, inventory.Enrollment{
						Machine: inventory.Machine{Name: machineName(i), Rack: in.Rack.Name, Unit: u + 1, Height: 1,
							MACs: []string{mac(i)}, PowerW: 10_200, Profile: "hgx-h100",
							BMC: inventory.BMC{Address: fmt.Sprintf("10.%d.%d.%d", h, r, u+1), Protocol: inventory.ProtocolRedfish, Username: "root"}},
						SealedPassword: make([]byte, 45), // the size of a sealed 16-byte password
					})
				}
				if _, err := s.ImportRack(ctx, in); err != nil {
					setupErr = err
					return
				}
			}
			if err := s.Compact(ctx); err != nil {
				setupErr = err
				return
			}
		}
		importTime = time.Since(start)
		// Give machines a spread of states, as a live hall has.
		for i := 0; i < total; i += 7 {
			if _, err := s.SetMachineState(ctx, machineName(i), inventory.MachineCommissioning, "", ""); err != nil {
				setupErr = err
				return
			}
		}
		if err := s.Compact(ctx); err != nil {
			setupErr = err
			return
		}
		if dbBytes, err = s.Bytes(); err != nil {
			setupErr = err
		}
	})
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	return store.Store
}

// BenchmarkImport100k reports what building the 100,000-machine database
// cost: time per machine and database bytes per machine.
func BenchmarkImport100k(b *testing.B) {
	setup(b)
	b.ReportMetric(float64(total), "machines")
	for range b.N {
	}
	b.ReportMetric(float64(importTime.Nanoseconds())/float64(total), "ns/machine")
	b.ReportMetric(float64(dbBytes)/float64(total), "dbbytes/machine")
	b.ReportMetric(importTime.Seconds(), "import-s")
}

// BenchmarkLookupMAC is the DHCP hot path.
func BenchmarkLookupMAC(b *testing.B) {
	s := setup(b)
	keys := make([][]byte, 4096)
	for i := range keys {
		hw, _ := net.ParseMAC(mac(i * 24 % total))
		keys[i] = hw
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, ok := s.LookupMAC(keys[i&4095]); !ok {
			b.Fatal("miss")
		}
	}
}

// BenchmarkMachineByMAC is the full record through the stored index.
func BenchmarkMachineByMAC(b *testing.B) {
	s := setup(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.MachineByMAC(ctx, mac(i*24%total)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListRack(b *testing.B) {
	s := setup(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ms, err := s.Machines(ctx, inventory.MachineFilter{Rack: rackName(i%halls, i%racksPerHall)})
		if err != nil || len(ms) != machinesOfRack {
			b.Fatal(len(ms), err)
		}
	}
}

func BenchmarkHallMachinesByState(b *testing.B) {
	s := setup(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ms, err := s.Machines(ctx, inventory.MachineFilter{Hall: hallName(i % halls), State: inventory.MachineCommissioning})
		if err != nil || len(ms) == 0 {
			b.Fatal(len(ms), err)
		}
	}
}

func BenchmarkHallCapacity(b *testing.B) {
	s := setup(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c, err := s.HallCapacity(ctx, hallName(i%halls))
		if err != nil || c.Phases[0].Machines[inventory.MachineEnrolled] == 0 {
			b.Fatal(err)
		}
	}
}

func TestMain(m *testing.M) {
	if v := os.Getenv("METALHALL_BENCH_MACHINES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n%(halls*machinesOfRack) != 0 {
			fmt.Fprintf(os.Stderr, "METALHALL_BENCH_MACHINES=%q: give a positive multiple of %d (ten halls of %d-machine racks), e.g. 10000\n", v, halls*machinesOfRack, machinesOfRack)
			os.Exit(2)
		}
		total, racksPerHall = n, n/(halls*machinesOfRack)
	}
	code := m.Run()
	if store != nil {
		store.Close()
	}
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}
