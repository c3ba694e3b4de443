package netboot

import (
	"bytes"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// BenchmarkTFTPFetch is what bench/dhcp/run_tftp.sh measures, on
// loopback and in one process, for a CPU profile of the server's path:
// 32 clients, each from its own address (the per-source limits see 32
// machines), fetch an 850 KB file (the size of ipxe.efi) at blksize 1468.
// One op is one whole fetch. MaxBlockSize is that of a 1500-byte MTU, as
// on the bench's veth: loopback's MTU would make pin/tftp allocate 64 KiB
// per packet read.
//
//	go test -run '^$' -bench TFTPFetch -cpuprofile cpu.prof ./netboot/
func BenchmarkTFTPFetch(b *testing.B) {
	root := b.TempDir()
	data := make([]byte, 850528)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(root, "ipxe.efi"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	addr, srv, _ := startTFTPConfig(b, TFTPConfig{Root: root, Timeout: 2 * time.Second, MaxConcurrent: 256, MaxBlockSize: 1468})
	const clients = 32
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := net.IPv4(127, 0, 3, byte(w+1)).String()
			var buf bytes.Buffer
			for next.Add(1) <= int64(b.N) {
				c, err := tftp.NewClient(addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.SetLocalAddr(src)
				c.SetBlockSize(1468)
				c.SetTimeout(2 * time.Second)
				c.SetRetries(5)
				wt, err := c.Receive("ipxe.efi", "octet")
				if err != nil {
					failed.Add(1)
					continue
				}
				buf.Reset()
				if _, err := wt.WriteTo(&buf); err != nil || buf.Len() != len(data) {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d fetches failed (stats %+v)", n, b.N, srv.Stats())
	}
}
