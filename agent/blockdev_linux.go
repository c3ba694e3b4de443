package agent

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// isBlockDevice says whether f is a block device (a real disk) rather than
// a regular file (tests, or writing an image file).
func isBlockDevice(f *os.File) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0, nil
}

// targetSize is the size in bytes of a block device or regular file.
func targetSize(f *os.File) (int64, error) {
	blk, err := isBlockDevice(f)
	if err != nil {
		return 0, err
	}
	if !blk {
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	var n uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); e != 0 {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", e)
	}
	return int64(n), nil
}

// errNotSupported means the device cannot do the operation natively; the
// caller falls back to writing zeros.
var errNotSupported = errors.New("not supported by the device")

func rangeIoctl(f *os.File, req uintptr, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(&r[0]))); e != 0 {
		if e == unix.EOPNOTSUPP || e == unix.ENOTTY || e == unix.EINVAL {
			return fmt.Errorf("%w (%v)", errNotSupported, e)
		}
		return e
	}
	return nil
}

// zeroRange makes [off, off+n) read as zeros without sending the zeros
// over the bus where the device can do better: BLKZEROOUT uses NVMe/SCSI
// WRITE ZEROES (or unmap with guaranteed zeroes) and only falls back to
// writing zero pages in the kernel. On a regular file it punches a hole.
func zeroRange(f *os.File, off, n int64) error {
	blk, err := isBlockDevice(f)
	if err != nil {
		return err
	}
	if blk {
		return rangeIoctl(f, unix.BLKZEROOUT, off, n)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		if err == unix.EOPNOTSUPP {
			return fmt.Errorf("%w (%v)", errNotSupported, err)
		}
		return err
	}
	return nil
}

// discardRange tells the device the range is unused (TRIM/deallocate).
// It does not promise zeros: callers that need zeros zero afterwards.
func discardRange(f *os.File, off, n int64) error {
	blk, err := isBlockDevice(f)
	if err != nil {
		return err
	}
	if blk {
		return rangeIoctl(f, unix.BLKDISCARD, off, n)
	}
	return zeroRange(f, off, n)
}

// dropCache evicts f's pages so that a read-back comes from the device,
// not from the page cache we just filled. Call after fsync.
func dropCache(f *os.File) {
	if blk, _ := isBlockDevice(f); blk {
		// Flushes and invalidates the block device's buffer cache.
		unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKFLSBUF, 0)
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// rereadPartitions asks the kernel to re-read the partition table after
// we wrote a new one; busy devices refuse, which is harmless here.
func rereadPartitions(f *os.File) {
	if blk, _ := isBlockDevice(f); blk {
		unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKRRPART, 0)
	}
}
