// Package ui_test measures the web console against a service run through
// its composition root, on loopback, with a real store on disk: the hall
// floor of 2,000 machines rendered server-side, and the memory that open
// live (server-sent event) pages cost.
//
//	go test -run '^$' -bench . -benchtime 20x ./bench/ui/
package ui_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/service/servicetest"
)

const (
	rows         = 5
	racksPerRow  = 10
	rackMachines = 40 // 1U each in a 42U rack: 50 racks, 2,000 machines
)

// setup seeds a hall of 2,000 machines, one rack import (one transaction)
// per rack, and signs a technician's browser in.
func setup(b *testing.B) (base string, c *http.Client) {
	b.Helper()
	ctx := context.Background()
	svc := servicetest.Start(b, "", nil)
	inv := svc.Inventory()
	must := func(_ any, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(inv.CreateSite(ctx, inventory.Site{Name: "s"}))
	must(inv.CreateHall(ctx, inventory.Hall{Name: "h", Site: "s"}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h", Number: 1, BudgetW: rows * racksPerRow * 440_000, TargetDate: "2027-03-01"}))
	n := 0
	for row := range rows {
		for k := range racksPerRow {
			name := fmt.Sprintf("r%c%02d", 'a'+row, k+1)
			imp := inventory.RackImport{Rack: inventory.Rack{Name: name, Hall: "h", Phase: 1, Row: string(rune('A' + row)), Units: 42, BudgetW: 440_000}}
			for u := 1; u <= rackMachines; u++ {
				n++
				imp.Machines = append(imp.Machines, inventory.Enrollment{Machine: inventory.Machine{
					Name: fmt.Sprintf("%s-%02d", name, u), Unit: u, Height: 1, PowerW: 10_000,
					MACs: []string{fmt.Sprintf("52:54:00:%02x:%02x:%02x", n>>16, (n>>8)&0xff, n&0xff)},
					BMC:  inventory.BMC{Address: fmt.Sprintf("10.1.%d.%d", n/250, n%250+1), Protocol: inventory.ProtocolRedfish, Username: "root"}}})
			}
			must(inv.ImportRack(ctx, imp))
		}
	}
	jar, _ := cookiejar.New(nil)
	c = &http.Client{Jar: jar, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	resp, err := c.PostForm(svc.AdminURL()+"/ui/login", url.Values{"token": {svc.Token}})
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("sign-in: %s", resp.Status)
	}
	return svc.AdminURL(), c
}

// BenchmarkHallPage2000Machines renders the hall floor (50 racks, 2,000
// machines, each a coloured square) and reads it whole. Target: < 200 ms.
func BenchmarkHallPage2000Machines(b *testing.B) {
	base, c := setup(b)
	var size int
	for b.Loop() {
		resp, err := c.Get(base + "/ui/halls/h")
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("hall page: %s %v", resp.Status, err)
		}
		size = len(body)
	}
	if got := strings.Count(string(readAll(b, c, base+"/ui/halls/h")), ` data-machine="`); got != rows*racksPerRow*rackMachines {
		b.Fatalf("the hall page shows %d machines, want %d", got, rows*racksPerRow*rackMachines)
	}
	b.ReportMetric(float64(size)/1024, "KiB/page")
}

// BenchmarkSitePage2000Machines renders the site page of that hall: its
// phases with budget, allocation, rated and measured power — measured is
// summed from every machine's last reading, so the page reads the hall's
// machines (the hall page's cost, without drawing them).
func BenchmarkSitePage2000Machines(b *testing.B) {
	base, c := setup(b)
	for b.Loop() {
		resp, err := c.Get(base + "/ui/site")
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("site page: %s %v", resp.Status, err)
		}
	}
	if page := string(readAll(b, c, base+"/ui/site")); !strings.Contains(page, "no BMC has reported a draw (2000 machines)") {
		b.Fatal("the site page does not say the machines have no power reading")
	}
}

func readAll(b *testing.B, c *http.Client, u string) []byte {
	resp, err := c.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkLivePages measures the heap that 100 open live pages add: each
// a rack page's event stream (40 machines), held open after its first
// snapshot. The benchmark's own client connections are in the same
// process and counted too, so the figure is an upper bound. Target:
// < 50 MiB.
func BenchmarkLivePages(b *testing.B) {
	for _, tc := range []struct{ name, query string }{
		{"rack", "rack=%s"},
		{"hall", "hall=h"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			base, c := setup(b)
			const pages = 100
			var heap, goroutines float64
			for b.Loop() {
				before := heapInUse()
				g0 := runtime.NumGoroutine()
				ctx, cancel := context.WithCancel(context.Background())
				for i := range pages {
					rack := fmt.Sprintf("r%c%02d", 'a'+i%rows, i/rows%racksPerRow+1)
					q := tc.query
					if strings.Contains(q, "%s") {
						q = fmt.Sprintf(q, rack)
					}
					req, _ := http.NewRequestWithContext(ctx, "GET", base+"/ui/live?"+q, nil)
					resp, err := c.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("live stream %d: %s", i, resp.Status)
					}
					// The first snapshot: the stream is open and has read
					// what it follows once.
					r := bufio.NewReader(resp.Body)
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							b.Fatal(err)
						}
						if line == "\n" {
							break
						}
					}
					defer resp.Body.Close()
				}
				heap = float64(int64(heapInUse())-int64(before)) / (1 << 20)
				goroutines = float64(runtime.NumGoroutine() - g0)
				cancel()
			}
			b.ReportMetric(heap, "MiB/100pages")
			b.ReportMetric(goroutines, "goroutines/100pages")
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
