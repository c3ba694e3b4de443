package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/agent/wire"
)

// runBurnin runs the parts of the burn-in the task asks for, one after
// the other (each loads the machine on its own: memory and CPUs, then the
// disks, then the network), each bounded by its own time.
func (r *Runner) runBurnin(ctx context.Context, t *wire.BurninTask, inv *wire.Inventory, log *slog.Logger) *wire.BurninResult {
	res := &wire.BurninResult{}
	if t.MemorySeconds > 0 {
		log.Info("burn-in: memory and CPU pattern test", "seconds", t.MemorySeconds, "percent", t.MemoryPercent)
		m := runMemoryTest(ctx, filepath.Join(r.Root, "proc/meminfo"), t.MemoryPercent, time.Duration(t.MemorySeconds)*time.Second)
		res.Memory = &m
	}
	if t.DiskMiB > 0 {
		res.Disks = r.diskTests(ctx, t, inv.Disks, log)
	}
	if t.ThroughputMiB > 0 {
		log.Info("burn-in: throughput from the service", "mib", t.ThroughputMiB)
		tp := throughputTest(ctx, r.Client, int64(t.ThroughputMiB)<<20, time.Duration(t.ThroughputSeconds)*time.Second)
		res.Throughput = &tp
	}
	return res
}

// maxMismatches is how many bad words a memory test keeps; it counts all.
const maxMismatches = 32

// runMemoryTest maps percent of the memory available now and runs the
// pattern test over it for d.
func runMemoryTest(ctx context.Context, meminfo string, percent int, d time.Duration) wire.MemoryTest {
	avail, err := readMeminfo(meminfo, "MemAvailable")
	if err != nil {
		// Kernels before 3.14 have no MemAvailable: what is free is the
		// safe lower bound.
		if avail, err = readMeminfo(meminfo, "MemFree"); err != nil {
			return wire.MemoryTest{Error: err.Error()}
		}
	}
	if percent <= 0 || percent > 95 {
		percent = 80
	}
	n := avail * int64(percent) / 100 &^ (1<<20 - 1)
	if n <= 0 {
		return wire.MemoryTest{Error: fmt.Sprintf("only %d bytes of memory available", avail)}
	}
	// An anonymous mapping, not the Go heap: it is handed back to the
	// kernel the moment the test ends, and the garbage collector never
	// scans or copies it.
	b, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return wire.MemoryTest{Error: fmt.Sprintf("mapping %d MiB of the %d MiB available: %v", n>>20, avail>>20, err)}
	}
	defer unix.Munmap(b)
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
	return memoryTest(ctx, words, runtime.NumCPU(), d, nil)
}

// memPatterns are written and verified in turn: the word's own address
// (and its inverse), which catches address lines that alias two words;
// walking ones and zeros, which catch data lines stuck or shorted; and
// pseudo-random words, which catch faults that depend on the neighbours'
// bits.
var memPatterns = []string{"address", "inverse-address", "walking-ones", "walking-zeros", "random"}

// memWord is pattern p's value for the word at address a (index i of the
// worker's share) on pass n.
func memWord(p int, a uint64, i int, n int64) uint64 {
	switch p {
	case 0:
		return a
	case 1:
		return ^a
	case 2:
		return 1 << uint((i+int(n))%64)
	case 3:
		return ^(uint64(1) << uint((i+int(n))%64))
	}
	// splitmix64 of the address and the pass: no state between words, so
	// verification computes the same value without storing it.
	z := a + uint64(n)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// memSegment is how many words a worker writes or verifies between two
// looks at the clock (8 MiB).
const memSegment = 1 << 20

// memoryTest writes and verifies the patterns over words, split between
// workers goroutines (one per CPU: this is also the CPU stress), until d
// has passed. Every worker completes at least its first pattern, so every
// word is tested once whatever d is. afterWrite, when set, runs between a
// worker's write and its verification (tests put their faults there).
func memoryTest(ctx context.Context, words []uint64, workers int, d time.Duration, afterWrite func(part []uint64)) wire.MemoryTest {
	start := time.Now()
	deadline := start.Add(d)
	if workers < 1 {
		workers = 1
	}
	if workers > len(words) {
		workers = len(words)
	}
	var (
		mu     sync.Mutex
		bad    []wire.MemoryMismatch
		nbad   atomic.Int64
		passes atomic.Int64
		wg     sync.WaitGroup
	)
	share := len(words) / workers
	for w := range workers {
		lo, hi := w*share, (w+1)*share
		if w == workers-1 {
			hi = len(words)
		}
		wg.Add(1)
		go func(part []uint64) {
			defer wg.Done()
			for n := int64(0); ; n++ {
				p := int(n % int64(len(memPatterns)))
				// Write the whole share, then verify it: a share far larger
				// than the caches makes both go to the DIMMs.
				written := 0
				for written < len(part) {
					if ctx.Err() != nil || (n > 0 && time.Now().After(deadline)) {
						break
					}
					end := min(written+memSegment, len(part))
					for i := written; i < end; i++ {
						part[i] = memWord(p, uint64(uintptr(unsafe.Pointer(&part[i]))), i, n)
					}
					written = end
				}
				if afterWrite != nil {
					afterWrite(part[:written])
				}
				for i := 0; i < written; i++ {
					a := uint64(uintptr(unsafe.Pointer(&part[i])))
					if want := memWord(p, a, i, n); part[i] != want {
						if nbad.Add(1) <= maxMismatches {
							mu.Lock()
							bad = append(bad, wire.MemoryMismatch{Address: a, Pattern: memPatterns[p], Wrote: want, Read: part[i]})
							mu.Unlock()
						}
					}
				}
				if written == len(part) {
					passes.Add(1)
				}
				if ctx.Err() != nil || time.Now().After(deadline) {
					return
				}
			}
		}(words[lo:hi])
	}
	wg.Wait()
	res := wire.MemoryTest{MiBTested: int64(len(words)) * 8 >> 20, Workers: workers, Passes: passes.Load(),
		Seconds: time.Since(start).Seconds(), Mismatches: bad, MismatchCount: nbad.Load()}
	if res.MiBTested == 0 && len(words) > 0 {
		res.MiBTested = 1
	}
	if ctx.Err() != nil && res.Passes < int64(workers) {
		// Stopped before every word was tested once: not a result.
		res.Error = "interrupted before one full pass: " + ctx.Err().Error()
	}
	return res
}

// diskTests runs the verified write/read test on every non-removable
// disk but the OS disk (unless the task includes it), up to four disks
// at once.
func (r *Runner) diskTests(ctx context.Context, t *wire.BurninTask, disks []wire.Disk, log *slog.Logger) []wire.DiskTest {
	osDisk := t.OSDisk
	if osDisk == "" {
		if d, err := SelectTarget(disks, ""); err == nil {
			osDisk = d.Name
		}
	}
	out := make([]wire.DiskTest, 0, len(disks))
	var todo []int
	for _, d := range disks {
		if d.Removable {
			continue
		}
		if d.Name == filepath.Base(osDisk) && !t.IncludeOSDisk {
			out = append(out, wire.DiskTest{Disk: d.Name, MismatchAt: -1, Skipped: "the OS disk (the profile does not include it)"})
			continue
		}
		out = append(out, wire.DiskTest{Disk: d.Name})
		todo = append(todo, len(out)-1)
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, i := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := out[i].Disk
			log.Info("burn-in: disk write/read test", "disk", name, "mib", t.DiskMiB)
			out[i] = diskTest(ctx, filepath.Join(r.DevDir, name), int64(t.DiskMiB)<<20, time.Duration(t.DiskSeconds)*time.Second, nil)
			out[i].Disk = name
		}()
	}
	wg.Wait()
	return out
}

// diskRegions is how many places of a disk the test writes: spread from
// the first to the last MiB, so a disk that drops writes beyond some
// offset, or maps two offsets onto one block, is caught.
const diskRegions = 16

const diskBlock = 1 << 20

// diskTest writes up to want bytes of a pattern to path in regions spread
// over it, syncs, drops the cache, reads them back and compares. Each
// 8-byte word holds its own byte offset mixed with a per-run seed, so a
// block written to the wrong place or left from an earlier run is told
// apart from one that came back damaged. Writing stops at d (at least one
// block is written); what was written is always verified. afterWrite, when
// set, runs between the sync and the read-back (tests damage the file
// there).
func diskTest(ctx context.Context, path string, want int64, d time.Duration, afterWrite func(*os.File)) wire.DiskTest {
	res := wire.DiskTest{Disk: filepath.Base(path), MismatchAt: -1}
	start := time.Now()
	deadline := start.Add(d)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer f.Close()
	size, err := targetSize(f)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	size &^= diskBlock - 1
	if size < diskBlock {
		res.Error = fmt.Sprintf("the disk is smaller than %d bytes", diskBlock)
		return res
	}
	want = min(want&^(diskBlock-1), size)
	if want < diskBlock {
		want = diskBlock
	}
	blocks := want / diskBlock
	regions := min(int64(diskRegions), blocks)
	per := blocks / regions
	var offs []int64
	for k := range regions {
		first := int64(0)
		if regions > 1 {
			first = (size/diskBlock - per) * k / (regions - 1)
		}
		for b := range per {
			offs = append(offs, (first+b)*diskBlock)
		}
	}
	seed := uint64(time.Now().UnixNano()) | 1
	buf := make([]byte, diskBlock)
	fill := func(off int64) {
		for i := 0; i < diskBlock; i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], uint64(off+int64(i))*0x9e3779b97f4a7c15^seed)
		}
	}
	written := 0
	for _, off := range offs {
		if written > 0 && (ctx.Err() != nil || time.Now().After(deadline)) {
			break
		}
		fill(off)
		if _, err := f.WriteAt(buf, off); err != nil {
			res.Error = fmt.Sprintf("write at byte %d: %v", off, err)
			return res
		}
		written++
	}
	if err := f.Sync(); err != nil {
		res.Error = fmt.Sprintf("sync: %v", err)
		return res
	}
	wrote := time.Since(start)
	if afterWrite != nil {
		afterWrite(f)
	}
	dropCache(f)
	readStart := time.Now()
	got := make([]byte, diskBlock)
	for _, off := range offs[:written] {
		if ctx.Err() != nil {
			res.Error = ctx.Err().Error()
			return res
		}
		if _, err := f.ReadAt(got, off); err != nil {
			res.Error = fmt.Sprintf("read back at byte %d: %v", off, err)
			return res
		}
		fill(off)
		if i := firstDiff(buf, got); i >= 0 {
			res.MismatchAt = off + int64(i)
			res.MismatchInfo = describeDiskMismatch(got, i, off, seed)
			break
		}
	}
	n := int64(written) * diskBlock
	res.BytesTested, res.Seconds = n, time.Since(start).Seconds()
	if s := wrote.Seconds(); s > 0 {
		res.WriteMBps = float64(n) / s / 1e6
	}
	if s := time.Since(readStart).Seconds(); s > 0 {
		res.ReadMBps = float64(n) / s / 1e6
	}
	return res
}

// firstDiff is the index of the first 8-byte word where a and b differ,
// or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := 0; i+8 <= len(a); i += 8 {
		if !bytes.Equal(a[i:i+8], b[i:i+8]) {
			return i
		}
	}
	return 0
}

// describeDiskMismatch says what came back instead of the pattern: zeros
// (a dropped write), the pattern of another offset (a misdirected write),
// or other data, with how many bits are wrong.
func describeDiskMismatch(got []byte, i int, off int64, seed uint64) string {
	read := binary.LittleEndian.Uint64(got[i:])
	wrote := uint64(off+int64(i))*0x9e3779b97f4a7c15 ^ seed
	if read == 0 {
		return "read zeros (the write did not reach the disk)"
	}
	// Undo the mixing to see whether it is our pattern for another offset:
	// 0x9e37... is odd, so it has an inverse modulo 2^64.
	if other := int64((read ^ seed) * inverseGolden); other >= 0 && other%8 == 0 && other != off+int64(i) {
		return "read the data written for byte " + strconv.FormatInt(other, 10) + " (a misdirected write)"
	}
	return fmt.Sprintf("wrote %#016x, read %#016x (%d bits differ)", wrote, read, bits.OnesCount64(read^wrote))
}

// inverseGolden is 0x9e3779b97f4a7c15's inverse modulo 2^64.
var inverseGolden = func() uint64 {
	// Newton's iteration doubles the correct low bits each step.
	const a = 0x9e3779b97f4a7c15
	x := uint64(a)
	for range 6 {
		x *= 2 - a*x
	}
	return x
}()

// throughputTest fetches n bytes of the service's burn-in stream within
// d (default 2 minutes), checks every byte against the pattern, and
// measures the rate from the first byte of the answer to the last.
func throughputTest(ctx context.Context, c *Client, n int64, d time.Duration) wire.ThroughputTest {
	if d <= 0 {
		d = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", c.endpoint(wire.EndpointBurninStream)+"?bytes="+strconv.FormatInt(n, 10), nil)
	if err != nil {
		return wire.ThroughputTest{Error: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	// The agent's client times each request out at 30 s: this one is
	// bounded by ctx instead, on the same connections.
	hc := &http.Client{Transport: c.httpClient().Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return wire.ThroughputTest{Error: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return wire.ThroughputTest{Error: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))}
	}
	start := time.Now()
	v := &patternVerifier{pattern: wire.BurninPattern()}
	got, err := io.CopyBuffer(v, resp.Body, make([]byte, 256<<10))
	res := wire.ThroughputTest{Bytes: got, Seconds: time.Since(start).Seconds()}
	if res.Seconds > 0 {
		res.MBps = float64(got) / res.Seconds / 1e6
	}
	switch {
	case errors.Is(err, errStreamCorrupt):
		res.Error = fmt.Sprintf("%v at byte %d", err, v.bad)
	case err != nil && ctx.Err() != nil:
		res.Error = fmt.Sprintf("%d of %d bytes in %v (the bound)", got, n, d)
	case err != nil:
		res.Error = err.Error()
	case got != n:
		res.Error = fmt.Sprintf("the service sent %d of %d bytes", got, n)
	}
	return res
}

var errStreamCorrupt = errors.New("the stream's bytes differ from the pattern")

// patternVerifier checks a stream against its repeating pattern.
type patternVerifier struct {
	pattern []byte
	off     int64
	bad     int64
}

func (v *patternVerifier) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		at := int(v.off % int64(len(v.pattern)))
		k := min(len(p)-done, len(v.pattern)-at)
		if !bytes.Equal(p[done:done+k], v.pattern[at:at+k]) {
			for i := range k {
				if p[done+i] != v.pattern[at+i] {
					v.bad = v.off + int64(i)
					break
				}
			}
			return done, errStreamCorrupt
		}
		done += k
		v.off += int64(k)
	}
	return done, nil
}
