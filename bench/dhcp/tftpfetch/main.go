// Command tftpfetch fetches one file over TFTP from many concurrent
// clients (pin/tftp's client) and reports throughput, for the TFTP
// comparison in bench/dhcp/run_tftp.sh.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"
)

func main() {
	server := flag.String("server", "10.99.0.1:69", "TFTP server")
	file := flag.String("file", "ipxe.efi", "file to fetch")
	conc := flag.Int("c", 32, "concurrent clients")
	total := flag.Int("n", 256, "fetches in all")
	blk := flag.Int("blksize", 1468, "blksize option")
	srcBase := flag.String("source-base", "", "first of -sources consecutive local IPv4 addresses; client i fetches from address i mod -sources (machines each have their own)")
	sources := flag.Int("sources", 1, "how many source addresses from -source-base")
	flag.Parse()
	var srcs []string
	if *srcBase != "" {
		a, err := netip.ParseAddr(*srcBase)
		if err != nil || !a.Is4() {
			fmt.Fprintf(os.Stderr, "-source-base %q: want an IPv4 address\n", *srcBase)
			os.Exit(2)
		}
		for range max(*sources, 1) {
			srcs = append(srcs, a.String())
			a = a.Next()
		}
	}

	var next, ok, failed atomic.Int64
	var bytes atomic.Int64
	var mu sync.Mutex
	sums := map[[32]byte]int{}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*total) {
				c, err := tftp.NewClient(*server)
				if err != nil {
					failed.Add(1)
					continue
				}
				if len(srcs) > 0 {
					if err := c.SetLocalAddr(srcs[w%len(srcs)]); err != nil {
						failed.Add(1)
						continue
					}
				}
				c.SetBlockSize(*blk)
				c.SetTimeout(2 * time.Second)
				c.SetRetries(5)
				wt, err := c.Receive(*file, "octet")
				if err != nil {
					failed.Add(1)
					continue
				}
				h := sha256.New()
				n, err := wt.WriteTo(io.MultiWriter(h, io.Discard))
				if err != nil {
					failed.Add(1)
					continue
				}
				var sum [32]byte
				copy(sum[:], h.Sum(nil))
				mu.Lock()
				sums[sum]++
				mu.Unlock()
				ok.Add(1)
				bytes.Add(n)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	fmt.Printf("fetches=%d failed=%d distinct_sha256=%d seconds=%.2f fetches/s=%.1f MiB/s=%.1f\n",
		ok.Load(), failed.Load(), len(sums), el.Seconds(), float64(ok.Load())/el.Seconds(), float64(bytes.Load())/el.Seconds()/(1<<20))
	if failed.Load() > 0 || len(sums) > 1 {
		os.Exit(1)
	}
}
