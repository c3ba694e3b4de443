package netboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

func startTFTP(t testing.TB, root string) (addr string, srv *TFTPServer, rec *MemoryRecorder) {
	t.Helper()
	return startTFTPConfig(t, TFTPConfig{Root: root, Timeout: time.Second})
}

func startTFTPConfig(t testing.TB, cfg TFTPConfig) (addr string, srv *TFTPServer, rec *MemoryRecorder) {
	t.Helper()
	rec = NewMemoryRecorder()
	cfg.Recorder = rec
	srv, err := NewTFTPServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("TFTP Shutdown hung")
		}
		srv.Close()
	})
	return conn.LocalAddr().String(), srv, rec
}

func tftpRoot(t testing.TB) (root string, big []byte) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "efi"), 0o755); err != nil {
		t.Fatal(err)
	}
	big = make([]byte, 1<<20+12345)
	rand.Read(big)
	for name, data := range map[string][]byte{
		"root/undionly.kpxe": big, "root/efi/ipxe.efi": []byte("efi"), "secret": []byte("SECRET"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A symlink out of the root must not be followed.
	if err := os.Symlink(filepath.Join(dir, "secret"), filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	return root, big
}

func fetch(t *testing.T, addr, name string, blksize int) ([]byte, int64, error) {
	t.Helper()
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	size, _ := wt.(tftp.IncomingTransfer).Size()
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), size, nil
}

func TestTFTPLargeFileBlksize(t *testing.T) {
	root, big := tftpRoot(t)
	addr, srv, rec := startTFTP(t, root)
	got, tsize, err := fetch(t, addr, "undionly.kpxe", 1468)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(big) {
		t.Fatalf("file differs: got %d bytes, want %d", len(got), len(big))
	}
	if tsize != int64(len(big)) {
		t.Errorf("tsize %d, want %d", tsize, len(big))
	}
	if got, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err != nil || string(got) != "efi" {
		t.Errorf("subdirectory: %q %v", got, err)
	}
	// The server counts after the client's last ACK: wait for it.
	for deadline := time.Now().Add(5 * time.Second); srv.Stats().Served < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if st := srv.Stats(); st.Served != 2 {
		t.Errorf("stats %+v", st)
	}
	if ev := rec.Events(); len(ev) != 2 || ev[0].Step != StepTFTP {
		t.Errorf("events %+v", ev)
	}
}

func TestTFTPRefusesTraversal(t *testing.T) {
	root, _ := tftpRoot(t)
	addr, srv, _ := startTFTP(t, root)
	bad := []string{
		"../secret", "efi/../../secret", "/etc/passwd", "%2e%2e/secret", "..%2fsecret", "..\\secret",
		"escape", "efi/", "efi", ".", "..", "./undionly.kpxe", "efi//ipxe.efi", ".hidden",
		strings.Repeat("a", 200), strings.Repeat("a/", 64) + "x", "undionly.kpxe\x01", "nope.bin",
	}
	for _, name := range bad {
		_, _, err := fetch(t, addr, name, 0)
		if err == nil {
			t.Errorf("%q: served", name)
			continue
		}
		// The client sees a fixed message: no path, no OS error text.
		if !strings.Contains(err.Error(), "file not found") || strings.Contains(err.Error(), root) || strings.Contains(err.Error(), "secret") && !strings.Contains(name, "secret") {
			t.Errorf("%q: error %q", name, err)
		}
	}
	if st := srv.Stats(); st.Denied != uint64(len(bad)) || st.Served != 0 {
		t.Errorf("stats %+v", st)
	}
	// NUL cannot be sent through the client (it ends the name on the
	// wire); check the name filter directly, with the other cases.
	for _, name := range append(bad, "a\x00b", "") {
		if _, ok := CleanTFTPName(name); ok && name != "nope.bin" && name != "escape" && name != "efi" {
			t.Errorf("CleanTFTPName(%q) accepted", name)
		}
	}
	for _, name := range []string{"undionly.kpxe", "efi/ipxe.efi", "snp-arm64.efi", "A_b-1.2"} {
		if _, ok := CleanTFTPName(name); !ok {
			t.Errorf("CleanTFTPName(%q) refused", name)
		}
	}
}

func TestTFTPRefusesWrite(t *testing.T) {
	root, _ := tftpRoot(t)
	addr, _, _ := startTFTP(t, root)
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(1)
	rf, err := c.Send("upload.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
	}
	if err == nil {
		t.Fatal("write accepted")
	}
	if _, err := os.Stat(filepath.Join(root, "upload.bin")); err == nil {
		t.Fatal("file written")
	}
}

// The cache serves a file from memory only while the file in the root is
// the one it read: replaced, swapped for a symlink out of the root, or
// removed, the next request sees what is on disk now.
func TestTFTPCacheFollowsTheFileOnDisk(t *testing.T) {
	root, _ := tftpRoot(t)
	addr, _, _ := startTFTP(t, root)
	name := filepath.Join(root, "efi", "ipxe.efi")
	if got, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err != nil || string(got) != "efi" {
		t.Fatalf("first: %q %v", got, err)
	}
	// Replaced by rename (a new file, same size), as a package upgrade does.
	tmp := filepath.Join(root, "efi", "new")
	if err := os.WriteFile(tmp, []byte("EFI"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
	if got, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err != nil || string(got) != "EFI" {
		t.Fatalf("after replace: %q %v", got, err)
	}
	// Swapped for a symlink that leaves the root.
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(filepath.Dir(root), "secret"), name); err != nil {
		t.Fatal(err)
	}
	if got, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err == nil {
		t.Fatalf("symlink out of the root served %q", got)
	}
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	if got, _, err := fetch(t, addr, "efi/ipxe.efi", 0); err == nil {
		t.Fatalf("removed file served %q", got)
	}
}
