//go:build linux && amd64

// Command tcgprobe runs as a QEMU guest's /init helper (bench/pxe/tcgprobe/run.sh)
// and times, inside the guest, the pieces of the agent's write and
// read-back on /dev/vda with a 48 MiB image like bench/pxe's: sha256 in
// memory, writes with and without an inline hash, and the read-back
// buffered (after a cache drop, the agent before) or with O_DIRECT,
// serial or pipelined (the agent now), with and without the hash. It
// says which part is I/O and which is the hash under TCG, and what a
// -cpu model changes. It destroys /dev/vda's first 48 MiB: run it only
// in the throwaway VM run.sh starts.
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"syscall"
	"time"
)

const (
	chunk = 4 << 20
	size  = 48 << 20
	dev   = "/dev/vda"
)

func drop(f *os.File) {
	syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), 0x1261 /* BLKFLSBUF */, 0)
	syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, 4 /* DONTNEED */, 0, 0)
}

func aligned(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return b
}

func mbps(d time.Duration) string {
	return fmt.Sprintf("%6.2fs %6.1f MB/s", d.Seconds(), float64(size)/1e6/d.Seconds())
}

func readSerial(f *os.File, hash bool) []byte {
	h := sha256.New()
	buf := aligned(chunk)
	for off := int64(0); off < size; off += chunk {
		n, err := f.ReadAt(buf, off)
		if err != nil || n != chunk {
			panic(fmt.Sprint(n, err))
		}
		if hash {
			h.Write(buf[:n])
		}
	}
	return h.Sum(nil)
}

func readPipe(f *os.File) []byte {
	free := make(chan []byte, 3)
	for range 3 {
		free <- aligned(chunk)
	}
	full := make(chan []byte, 3)
	go func() {
		for off := int64(0); off < size; off += chunk {
			b := <-free
			if n, err := f.ReadAt(b, off); err != nil || n != chunk {
				panic(fmt.Sprint(n, err))
			}
			full <- b
		}
		close(full)
	}()
	h := sha256.New()
	for b := range full {
		h.Write(b)
		free <- b
	}
	return h.Sum(nil)
}

func main() {
	img := make([]byte, size)
	rand.Read(img[16<<20:])
	// Like bench/pxe's image: 16 MiB with some all-zero blocks (here
	// 1 in 8), then 32 MiB random.
	for i := 0; i < 16<<20; i += 4096 {
		if (i/4096)%8 != 0 {
			copy(img[i:i+4096], img[(16<<20)+i:(16<<20)+i+4096])
		}
	}
	want := sha256.Sum256(img)

	t := time.Now()
	sha256.Sum256(img)
	fmt.Println("PROBE sha256 in memory        ", mbps(time.Since(t)))

	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		panic(err)
	}
	t = time.Now()
	for off := 0; off < size; off += chunk {
		if _, err := f.WriteAt(img[off:off+chunk], int64(off)); err != nil {
			panic(err)
		}
	}
	f.Sync()
	fmt.Println("PROBE write buffered + fsync  ", mbps(time.Since(t)))
	t = time.Now()
	h := sha256.New()
	for off := 0; off < size; off += chunk {
		h.Write(img[off : off+chunk])
		if _, err := f.WriteAt(img[off:off+chunk], int64(off)); err != nil {
			panic(err)
		}
	}
	f.Sync()
	fmt.Println("PROBE write+hash + fsync      ", mbps(time.Since(t)))

	for round := range 2 {
		drop(f)
		t = time.Now()
		readSerial(f, false)
		fmt.Println("PROBE", round, "buffered read only        ", mbps(time.Since(t)))
		drop(f)
		t = time.Now()
		got := readSerial(f, true)
		fmt.Println("PROBE", round, "buffered read+hash (old)  ", mbps(time.Since(t)), string(got) == string(want[:]))

		d, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			panic(err)
		}
		t = time.Now()
		readSerial(d, false)
		fmt.Println("PROBE", round, "O_DIRECT read only        ", mbps(time.Since(t)))
		t = time.Now()
		got = readSerial(d, true)
		fmt.Println("PROBE", round, "O_DIRECT read+hash serial ", mbps(time.Since(t)), string(got) == string(want[:]))
		t = time.Now()
		got = readPipe(d)
		fmt.Println("PROBE", round, "O_DIRECT pipelined (new)  ", mbps(time.Since(t)), string(got) == string(want[:]))
		drop(f)
		t = time.Now()
		got = readPipe(f)
		fmt.Println("PROBE", round, "buffered pipelined        ", mbps(time.Since(t)), string(got) == string(want[:]))
		d.Close()
	}
	fmt.Println("PROBE-DONE")
}
