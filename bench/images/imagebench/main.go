// Command imagebench drives the image store benchmarks in bench/images
// (see its README and run.sh):
//
//	imagebench mkimage -out F -size 2G   a disk-like image: data, text, zero runs
//	imagebench import -file F            time an import into a fresh store
//	imagebench sha256 -file F            time Go's sha256 alone (the hashing floor)
//	imagebench serve -dir D -file F      import F into D and serve it on loopback
//	imagebench load -url U -clients 32   N clients each GET the whole blob
//	imagebench summarize < results.jsonl  median, min and max per measurement
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: imagebench mkimage|import|sha256|serve|load [flags]")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{"mkimage": mkimage, "import": importCmd, "sha256": sha256Cmd, "serve": serve, "load": load, "summarize": summarize}
	fn, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "imagebench: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := fn(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebench:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// mkimage writes a deterministic image shaped like a real one: per 1 MiB
// extent, about 40% random data (binaries, compressed files), 25% text-like
// repetitive data, 35% zeros (free space), in runs.
func mkimage(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ExitOnError)
	out := fs.String("out", "", "output file")
	size := fs.String("size", "2G", "size")
	fs.Parse(args)
	n, err := parseSize(*size)
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(42, 42))
	buf := make([]byte, 1<<20)
	text := []byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit; /usr/lib/x86_64-linux-gnu/libc.so.6 ")
	for off := int64(0); off < n; off += int64(len(buf)) {
		kind := r.IntN(100)
		switch {
		case kind < 40:
			for i := 0; i < len(buf); i += 8 {
				v := r.Uint64()
				for j := range 8 {
					buf[i+j] = byte(v >> (8 * j))
				}
			}
		case kind < 65:
			for i := range buf {
				buf[i] = text[(i+int(off>>20))%len(text)]
			}
			for range 64 { // a little entropy, as in real text
				buf[r.IntN(len(buf))] = byte(r.Uint32())
			}
		default:
			clear(buf)
		}
		w := buf[:min(int64(len(buf)), n-off)]
		if _, err := f.Write(w); err != nil {
			return err
		}
	}
	return f.Close()
}

type result struct {
	What    string  `json:"what"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
	Extra   any     `json:"extra,omitempty"`
}

func report(r result) {
	r.MBps = float64(r.Bytes) / 1e6 / r.Seconds
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func openStore(dir string, noSync bool) (*inventory.Store, *images.Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, err
	}
	inv, err := inventory.Open(filepath.Join(dir, "metalhall.db"), inventory.Options{NoSync: noSync})
	if err != nil {
		return nil, nil, err
	}
	st, err := images.Open(dir, inv, images.Options{NoSync: noSync, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		inv.Close()
		return nil, nil, err
	}
	return inv, st, nil
}

func importCmd(args []string) error {
	fs := flag.NewFlagSet("import", flag.ExitOnError)
	file := fs.String("file", "", "image file")
	dir := fs.String("dir", "", "store directory (fresh; removed afterwards)")
	noSync := fs.Bool("nosync", false, "skip fsync (measures the pipeline, not the disk)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile here")
	fs.Parse(args)
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	inv, st, err := openStore(*dir, *noSync)
	if err != nil {
		return err
	}
	defer os.RemoveAll(*dir)
	defer inv.Close()
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	start := time.Now()
	img, err := st.Import(context.Background(), f, images.ImportOptions{Name: "bench"})
	if err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	what := "import"
	if *noSync {
		what += " (nosync)"
	}
	report(result{What: what + " " + img.Format, Bytes: img.Size, Seconds: el, Extra: img})
	return nil
}

func sha256Cmd(args []string) error {
	fs := flag.NewFlagSet("sha256", flag.ExitOnError)
	file := fs.String("file", "", "file")
	fs.Parse(args)
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	start := time.Now()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		return err
	}
	report(result{What: fmt.Sprintf("go sha256 %x", h.Sum(nil)), Bytes: n, Seconds: time.Since(start).Seconds()})
	return nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fs.String("dir", "", "store directory")
	file := fs.String("file", "", "image to import first")
	listen := fs.String("listen", "127.0.0.1:18080", "address")
	maxc := fs.Int("max-concurrent", 256, "transfer limit")
	fs.Parse(args)
	inv, st, err := openStore(*dir, true)
	if err != nil {
		return err
	}
	defer inv.Close()
	ctx := context.Background()
	img, err := inv.Image(ctx, "bench")
	if err != nil {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		img, err = st.Import(ctx, f, images.ImportOptions{Name: "bench"})
		f.Close()
		if err != nil {
			return err
		}
	}
	blob, _ := st.BlobPath(img.SHA256)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// The script reads these two lines: where the blob is, and that the
	// server is listening.
	fmt.Printf("blob %s\nsha256 %s\n", blob, img.SHA256)
	os.Stdout.Sync()
	srv := &http.Server{Handler: st.BlobHandler(images.HandlerOptions{Authorize: images.AllowAll, MaxConcurrent: *maxc}),
		ReadHeaderTimeout: 10 * time.Second}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, os.Interrupt)
		<-c
		srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// load starts N clients at once, each GETting the whole blob, and reports
// the aggregate throughput and the server's peak RSS (summed over -pids,
// sampled every 50 ms) while they ran.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "blob URL")
	clients := fs.Int("clients", 32, "concurrent clients")
	pids := fs.String("pids", "", "comma-separated server PIDs whose RSS to sample")
	label := fs.String("label", "", "label for the result")
	fs.Parse(args)

	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: *clients}
	client := &http.Client{Transport: tr}
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *clients)
	stop := make(chan struct{})
	rssBefore := rss(*pids)
	var peak atomic.Int64
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := rss(*pids); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	start := time.Now()
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(*url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("GET: %s", resp.Status)
				return
			}
			// Read with a large buffer straight from the body: io.Discard's
			// ReadFrom would read 8 KiB at a time.
			buf := make([]byte, 1<<20)
			var n int64
			for {
				m, err := resp.Body.Read(buf)
				n += int64(m)
				if err == io.EOF {
					break
				}
				if err != nil {
					errs <- err
					return
				}
			}
			if n != resp.ContentLength {
				errs <- fmt.Errorf("got %d bytes of %d", n, resp.ContentLength)
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	close(stop)
	close(errs)
	for err := range errs {
		return err
	}
	report(result{What: fmt.Sprintf("serve %s %d clients", *label, *clients), Bytes: total.Load(), Seconds: el,
		Extra: map[string]int64{"server_rss_before_kib": rssBefore, "server_rss_peak_kib": max(peak.Load(), rssBefore)}})
	return nil
}

// rss sums VmRSS (KiB) of the given processes.
func rss(pids string) int64 {
	var sum int64
	for _, p := range strings.Split(pids, ",") {
		if p == "" {
			continue
		}
		data, err := os.ReadFile("/proc/" + p + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				sum += v
			}
		}
	}
	return sum
}

// summarize reads result lines and prints, per measurement in order of
// first appearance, the median, min and max MB/s and peak RSS.
func summarize(args []string) error {
	type agg struct {
		mbps []float64
		rss  []int64
	}
	var order []string
	by := map[string]*agg{}
	dec := json.NewDecoder(os.Stdin)
	for dec.More() {
		var r struct {
			What  string  `json:"what"`
			MBps  float64 `json:"mb_per_s"`
			Extra struct {
				Peak int64 `json:"server_rss_peak_kib"`
			} `json:"extra"`
		}
		if err := dec.Decode(&r); err != nil {
			return err
		}
		a := by[r.What]
		if a == nil {
			a = &agg{}
			by[r.What] = a
			order = append(order, r.What)
		}
		a.mbps = append(a.mbps, r.MBps)
		a.rss = append(a.rss, r.Extra.Peak)
	}
	fmt.Printf("%-40s %10s %10s %10s %14s\n", "measurement", "median", "min", "max", "peak RSS MiB")
	for _, w := range order {
		a := by[w]
		s := slices.Clone(a.mbps)
		slices.Sort(s)
		rss := "-"
		if m := slices.Max(a.rss); m > 0 {
			rss = fmt.Sprintf("%.1f", float64(m)/1024)
		}
		fmt.Printf("%-40s %10.0f %10.0f %10.0f %14s\n", w, s[len(s)/2], s[0], s[len(s)-1], rss)
	}
	return nil
}
