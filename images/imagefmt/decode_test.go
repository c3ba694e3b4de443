package imagefmt

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func zstdOf(t *testing.T, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseAcceptsTheContractNamesAndTheOldShortOnes(t *testing.T) {
	for in, want := range map[string]Format{
		"": "", "raw": Raw, "raw.gz": Gzip, "gz": Gzip, "raw.zst": Zstd, "zst": Zstd, "ZSTD": Zstd, "raw.xz": XZ, "xz": XZ,
	} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := Parse("qcow2")
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "raw.zst") {
		t.Errorf("Parse(qcow2) = %v", err)
	}
}

func TestDecoderReadsEveryFormat(t *testing.T) {
	img := bytes.Repeat([]byte("metalhall disk "), 100_000)
	for f, stream := range map[Format][]byte{Raw: img, Gzip: gzipOf(t, img), Zstd: zstdOf(t, img)} {
		got, err := Detect(stream[:min(HeadSize, len(stream))])
		if err != nil || got != f {
			t.Fatalf("Detect: %q %v, want %q", got, err, f)
		}
		d, err := NewDecoder(f, bytes.NewReader(stream), int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(d)
		d.Close()
		if err != nil || !bytes.Equal(out, img) {
			t.Fatalf("%s: %d bytes, %v", f, len(out), err)
		}
	}
}

// A zstd bomb: 1 GiB of zeros in a few hundred KiB. The decoder stops one
// byte past the limit, long before it has spent the CPU the bomb asks for.
func TestDecoderStopsAZstdBombAtTheLimit(t *testing.T) {
	bomb := zstdBomb(t, 1<<30)
	if len(bomb) > 1<<20 {
		t.Fatalf("the bomb is %d bytes", len(bomb))
	}
	const limit = 16 << 20
	d, err := NewDecoder(Zstd, bytes.NewReader(bomb), limit)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n, err := io.Copy(io.Discard, d)
	var tl *TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || tl.Limit != limit {
		t.Fatalf("copied %d bytes, err %v; want a TooLargeError", n, err)
	}
	if n != limit {
		t.Fatalf("copied %d bytes before stopping, want exactly the limit %d", n, limit)
	}
}

// An exact-size stream is not too large.
func TestDecoderAcceptsAStreamOfExactlyTheLimit(t *testing.T) {
	img := bytes.Repeat([]byte{7}, 1<<20)
	d, _ := NewDecoder(Zstd, bytes.NewReader(zstdOf(t, img)), int64(len(img)))
	defer d.Close()
	if n, err := io.Copy(io.Discard, d); err != nil || n != int64(len(img)) {
		t.Fatalf("%d %v", n, err)
	}
}

// zstdBomb compresses size zero bytes with the zstd tool when it is there
// (what an attacker would use), else with the library, streamed.
func zstdBomb(t *testing.T, size int64) []byte {
	t.Helper()
	if path, err := exec.LookPath("zstd"); err == nil {
		cmd := exec.Command(path, "-q", "-1", "-c")
		cmd.Stdin = io.LimitReader(zeroReader{}, size)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if _, err := io.Copy(w, io.LimitReader(zeroReader{}, size)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A hand-made zstd frame asking for a window of 2^log bytes, holding one
// raw block of one byte: the window is what a bomb uses to claim memory.
func zstdFrameWithWindow(log int) []byte {
	return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(log-10) << 3, 0x09, 0x00, 0x00, 'x'}
}

func TestZstdWindowPastTheLimitIsRefused(t *testing.T) {
	for log, ok := range map[int]bool{27: true, 28: true, 29: false, 31: false} {
		d, err := NewDecoder(Zstd, bytes.NewReader(zstdFrameWithWindow(log)), 0)
		var out []byte
		if err == nil {
			out, err = io.ReadAll(d)
			d.Close()
		}
		if ok && (err != nil || string(out) != "x") {
			t.Errorf("window 2^%d: %q, %v; want it accepted", log, out, err)
		}
		if !ok && err == nil {
			t.Errorf("window 2^%d: accepted, the limit is %d", log, MaxZstdWindow)
		}
	}
}

// Real container headers as qemu-img writes them, raw and inside a
// compressed stream: refused, the message naming what was found and how
// to convert it.
func TestContainersAreRefusedRawAndCompressed(t *testing.T) {
	heads := map[string][]byte{
		"VHDX": []byte("vhdxfile" + strings.Repeat("\x00", 600)),
		"VHD":  []byte("conectix" + strings.Repeat("\x00", 600)),
		"VMDK": []byte("KDMV\x01\x00\x00\x00" + strings.Repeat("\x00", 600)),
		"VDI":  append([]byte("<<< Oracle VM VirtualBox Disk Image >>>\n"+strings.Repeat("\x00", 24)), append([]byte{0x7f, 0x10, 0xda, 0xbe}, make([]byte, 500)...)...),
	}
	// qemu-img (Debian's qemu-utils) writes the real thing where it is
	// installed; the hand-made heads above cover the same magic without it.
	if qemuImg, err := exec.LookPath("qemu-img"); err == nil {
		dir := t.TempDir()
		for name, fmtName := range map[string]string{"qcow2": "qcow2", "VHD": "vpc", "VMDK": "vmdk", "VHDX": "vhdx", "VDI": "vdi"} {
			p := filepath.Join(dir, "disk."+fmtName)
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", fmtName, p, "64M").CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create -f %s: %v: %s", fmtName, err, out)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			heads[name] = b
		}
	} else {
		t.Log("qemu-img not installed (Debian qemu-utils): using hand-made headers")
		heads["qcow2"] = []byte("QFI\xfb\x00\x00\x00\x03" + strings.Repeat("\x00", 600))
	}
	for name, head := range heads {
		_, err := Detect(head)
		var ce *ContainerError
		if !errors.As(err, &ce) || ce.Found != name || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "qemu-img convert -O raw") {
			t.Errorf("%s, raw: %v", name, err)
		}
		for f, stream := range map[Format][]byte{Zstd: zstdOf(t, head), Gzip: gzipOf(t, head)} {
			if got, err := Detect(stream); err != nil || got != f {
				t.Fatalf("%s in %s: detected %q, %v", name, f, got, err)
			}
			d, _ := NewDecoder(f, bytes.NewReader(stream), 0)
			n, err := io.Copy(io.Discard, d)
			d.Close()
			if !errors.As(err, &ce) || ce.Found != name || ce.Inside != f || n != 0 {
				t.Errorf("%s in %s: %d bytes out, %v", name, f, n, err)
			}
			if err != nil && !strings.Contains(err.Error(), "the "+string(f)+" stream is a "+name) {
				t.Errorf("message does not say where: %v", err)
			}
		}
	}
}

func TestShortStreamsDecode(t *testing.T) {
	for _, img := range [][]byte{{}, {1}, bytes.Repeat([]byte{2}, HeadSize-1), bytes.Repeat([]byte{3}, HeadSize), bytes.Repeat([]byte{4}, HeadSize+1)} {
		d, err := NewDecoder(Zstd, bytes.NewReader(zstdOf(t, img)), int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(d)
		d.Close()
		if err != nil || !bytes.Equal(out, img) {
			t.Errorf("%d bytes: got %d, %v", len(img), len(out), err)
		}
	}
}
