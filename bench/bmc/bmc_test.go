// Package bmcbench measures the bmc Controller against a hall of emulated
// Redfish BMCs: 1,000 lab/redfish servers in this process, each on its own
// loopback port with 100 ms of latency per request, all set to PXE and
// power-cycled through the Controller.
//
//	go test -run '^$' -bench PXECycle -benchtime 1x ./bench/bmc/
package bmcbench

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/lab/redfish"
)

// raiseNoFile lifts the soft open-files limit to the hard one: 1,000
// listeners plus both ends of every in-flight connection exceed the usual
// soft limit of 1024.
func raiseNoFile(b *testing.B) uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Fatal(err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			b.Fatal(err)
		}
	}
	return rl.Cur
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// peaks samples goroutines and memory until stop is closed.
type peaks struct {
	goroutines          atomic.Int64
	heapSys, sys, inuse atomic.Uint64
}

func (p *peaks) sample(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var ms runtime.MemStats
	for {
		if g := int64(runtime.NumGoroutine()); g > p.goroutines.Load() {
			p.goroutines.Store(g)
		}
		runtime.ReadMemStats(&ms)
		if ms.HeapSys > p.heapSys.Load() {
			p.heapSys.Store(ms.HeapSys)
		}
		if ms.Sys > p.sys.Load() {
			p.sys.Store(ms.Sys)
		}
		if ms.HeapInuse > p.inuse.Load() {
			p.inuse.Store(ms.HeapInuse)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func BenchmarkPXECycle(b *testing.B) {
	n := envInt("BMC_BENCH_N", 1000)
	conc := envInt("BMC_BENCH_CONCURRENCY", n)
	latency := time.Duration(envInt("BMC_BENCH_LATENCY_MS", 100)) * time.Millisecond
	nofile := raiseNoFile(b)

	for range b.N {
		b.StopTimer()
		fleet, err := redfish.StartFleet("127.0.0.1", n, 0, func(i int) redfish.Config {
			return redfish.Config{Username: "admin", Password: "pw", Latency: latency, PowerOn: i%2 == 0}
		})
		if err != nil {
			b.Fatalf("start %d BMCs (RLIMIT_NOFILE %d): %v", n, nofile, err)
		}
		c := bmc.New(bmc.Config{
			MaxConcurrent: conc,
			OpTimeout:     30 * time.Second,
			PollInterval:  200 * time.Millisecond,
			PowerTimeout:  60 * time.Second,
			Retries:       2,
			Backoff:       500 * time.Millisecond,
		})
		runtime.GC()
		var p peaks
		stop, sampled := make(chan struct{}), make(chan struct{})
		go p.sample(stop, sampled)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		var failed atomic.Int64
		var firstErr sync.Once
		var wg sync.WaitGroup
		b.StartTimer()
		start := time.Now()
		for _, m := range fleet.BMCs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ep := bmc.Endpoint{Address: "http://" + m.Addr, Protocol: bmc.Redfish, Username: "admin", Password: "pw"}
				err := c.SetBootDevice(ctx, ep, bmc.BootOptions{Device: bmc.BootPXE, UEFI: true})
				if err == nil {
					err = c.SetPower(ctx, ep, bmc.ActionCycle)
				}
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { b.Logf("first failure: %v", err) })
				}
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		b.StopTimer()
		cancel()
		close(stop)
		<-sampled

		var requests int64
		bad := 0
		for _, m := range fleet.BMCs {
			requests += m.Requests()
			if !m.Power() || m.LastBoot() != "Pxe" || m.Sessions() != 0 {
				bad++
			}
		}
		c.Close()
		fleet.Close()
		if failed.Load() > 0 || bad > 0 {
			b.Fatalf("%d operations failed, %d BMCs not in PXE+on or with open sessions", failed.Load(), bad)
		}
		const mib = 1 << 20
		b.ReportMetric(wall.Seconds(), "wall-s")
		b.ReportMetric(float64(p.goroutines.Load()), "peak-goroutines")
		b.ReportMetric(float64(p.heapSys.Load())/mib, "peak-heapsys-MiB")
		b.ReportMetric(float64(p.sys.Load())/mib, "peak-sys-MiB")
		b.ReportMetric(float64(requests)/float64(n), "requests/machine")
		b.Logf("%d machines, %v latency/request, concurrency %d: %v wall, peak %d goroutines, HeapSys %.0f MiB, HeapInuse %.0f MiB, Sys %.0f MiB, %.1f requests/machine, GOMAXPROCS %d",
			n, latency, conc, wall.Round(time.Millisecond), p.goroutines.Load(), float64(p.heapSys.Load())/mib,
			float64(p.inuse.Load())/mib, float64(p.sys.Load())/mib, float64(requests)/float64(n), runtime.GOMAXPROCS(0))
	}
}
