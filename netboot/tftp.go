package netboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"
)

// TFTPConfig configures a TFTPServer.
type TFTPConfig struct {
	Root          string        // directory served read-only (e.g. /usr/lib/ipxe)
	MaxConcurrent int           // transfers at once; more are refused as busy (default 64)
	Timeout       time.Duration // per-packet retransmit timeout (default 2s)
	Recorder      Recorder
	// Addresses, if set, names the MAC of a transfer's peer in events
	// (TFTP itself carries no MAC).
	Addresses Addresses
	Logger    *slog.Logger
}

// TFTPServer serves the iPXE binaries. pin/tftp passes filenames through
// unchanged, so every name is checked here and opened through os.Root,
// which also refuses symlinks that leave the root.
type TFTPServer struct {
	root   *os.Root
	srv    *tftp.Server
	sem    chan struct{}
	rec    Recorder
	addrs  Addresses
	log    *slog.Logger
	served atomic.Uint64
	denied atomic.Uint64
	busy   atomic.Uint64
	failed atomic.Uint64
}

// TFTPStats are the TFTP counters.
type TFTPStats struct {
	Served, Denied, Busy, Failed uint64
}

// The errors a client sees. pin/tftp sends the handler's error text
// verbatim, so they are fixed strings that name no path.
var (
	errTFTPNotFound = errors.New("file not found")
	errTFTPBusy     = errors.New("server busy, retry")
)

// maxTFTPName bounds filenames; iPXE binaries have short names.
const maxTFTPName = 128

// NewTFTPServer opens cfg.Root and returns a server for it. Close it when done.
func NewTFTPServer(cfg TFTPConfig) (*TFTPServer, error) {
	if cfg.Root == "" {
		return nil, errors.New("TFTP: root directory required")
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("TFTP: opening root %s: %w", cfg.Root, err)
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Recorder == nil {
		cfg.Recorder = NopRecorder{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &TFTPServer{root: root, sem: make(chan struct{}, cfg.MaxConcurrent), rec: cfg.Recorder, addrs: cfg.Addresses, log: cfg.Logger}
	// A nil write handler makes pin/tftp refuse every WRQ.
	t.srv = tftp.NewServer(t.read, nil)
	t.srv.SetTimeout(cfg.Timeout)
	t.srv.SetRetries(5)
	return t, nil
}

// Stats returns the counters.
func (t *TFTPServer) Stats() TFTPStats {
	return TFTPStats{Served: t.served.Load(), Denied: t.denied.Load(), Busy: t.busy.Load(), Failed: t.failed.Load()}
}

// Serve serves on conn until ctx is done, then stops with Shutdown
// (closing conn ourselves would make pin/tftp's loop spin) and waits for
// running transfers. pin/tftp opens one socket per transfer from the
// goroutine that runs its loop, which is the caller's: run Serve on a
// thread in the right network namespace (see lab/netns.Run).
func (t *TFTPServer) Serve(ctx context.Context, conn *net.UDPConn) error {
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			t.srv.Shutdown()
		case <-stop:
		}
	}()
	err := t.srv.Serve(conn)
	close(stop)
	<-stopped
	// Shutdown closes conn only if Serve had registered it already.
	conn.Close()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("TFTP: %w", err)
	}
	return nil
}

// Close releases the root directory.
func (t *TFTPServer) Close() error { return t.root.Close() }

// CleanTFTPName checks a requested filename and returns the name to open
// in the root. It refuses anything but plain relative paths of
// [A-Za-z0-9._-] segments: "..", absolute paths, percent escapes,
// backslashes, NUL and other control bytes, empty segments, over-long
// names.
func CleanTFTPName(name string) (string, bool) {
	if name == "" || len(name) > maxTFTPName || name[0] == '/' {
		return "", false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-', c == '/':
		default:
			return "", false
		}
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." || seg[0] == '.' {
			return "", false
		}
	}
	return name, true
}

func (t *TFTPServer) read(filename string, rf io.ReaderFrom) error {
	peer, mac := "", ""
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		peer = ra.IP.String()
		if a, ok := netip.AddrFromSlice(ra.IP.To4()); ok && t.addrs != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if m, ok := t.addrs.Owner(ctx, a); ok {
				mac = m.String()
			}
			cancel()
		}
	}
	name, ok := CleanTFTPName(filename)
	if !ok {
		t.denied.Add(1)
		t.log.Warn("tftp: refused filename", "peer", peer, "name", truncate(filename, 80))
		return errTFTPNotFound
	}
	// Bound concurrent transfers. Returning an error makes pin/tftp send
	// it and close the transfer socket (returning nil would leak it).
	select {
	case t.sem <- struct{}{}:
	default:
		t.busy.Add(1)
		return errTFTPBusy
	}
	defer func() { <-t.sem }()
	f, err := t.root.Open(name)
	if err != nil {
		t.denied.Add(1)
		return errTFTPNotFound
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		t.denied.Add(1)
		return errTFTPNotFound
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(fi.Size()) // answers the tsize option
	}
	n, err := rf.ReadFrom(f)
	if err != nil {
		t.failed.Add(1)
		// UEFI PXE asks for the size first (tsize) and then aborts that
		// transfer on purpose before fetching for real: not worth a warning.
		t.log.Debug("tftp: transfer ended early", "peer", peer, "file", name, "sent", n, "err", err)
		// ReadFrom already aborted the transfer and closed its socket.
		return nil
	}
	t.served.Add(1)
	t.rec.Event(Event{MAC: mac, Step: StepTFTP, Detail: fmt.Sprintf("file=%s bytes=%d peer=%s", name, n, peer)})
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// openRegular opens name in root if it is a regular file.
func openRegular(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fs.ErrNotExist
	}
	return f, fi, nil
}
