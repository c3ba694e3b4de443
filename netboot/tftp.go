package netboot

import (
	"bytes"
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"
)

// TFTPConfig configures a TFTPServer.
type TFTPConfig struct {
	Root          string        // directory served read-only (e.g. /usr/lib/ipxe)
	MaxConcurrent int           // transfers at once (default 64); see tftpGate for who makes room
	PerSource     int           // transfers at once from one source address (default 4)
	Timeout       time.Duration // per-packet retransmit timeout (default 2s)
	// FirstACKWait is how long a new transfer waits for its client's
	// first ACK before it is ended (default 1s). A machine on the
	// provisioning network answers in milliseconds; a spoofed request
	// never does.
	FirstACKWait time.Duration
	// MaxBlockSize caps the blksize option (RFC 2348). Default: the MTU
	// of the interface holding the listening address less 32 bytes of
	// IPv4, UDP and TFTP headers, or 1468 (Ethernet) when listening on
	// every address.
	MaxBlockSize int
	// CacheBytes bounds the file bytes kept in memory (default 64 MiB);
	// files larger than an eighth of it are read from disk each time.
	CacheBytes int64
	Recorder   Recorder
	// Addresses, if set, names the MAC of a transfer's peer in events
	// (TFTP itself carries no MAC).
	Addresses Addresses
	Logger    *slog.Logger
}

// TFTPServer serves the iPXE binaries. pin/tftp passes filenames through
// unchanged, so every name is checked here and opened through os.Root,
// which also refuses symlinks that leave the root.
type TFTPServer struct {
	cfg   TFTPConfig
	root  *os.Root
	srv   *tftp.Server
	cache tftpCache
	rec   Recorder
	addrs Addresses
	log   *slog.Logger
	stats tftpCounters

	mu   sync.Mutex
	gate *tftpGate // set by Serve
}

type tftpCounters struct {
	served, denied, busy, failed, shed, expired atomic.Uint64
}

// TFTPStats are the TFTP counters.
type TFTPStats struct {
	Served, Denied, Failed uint64
	// Busy counts requests refused because every slot (in all, or of
	// their source) was held by a client that answers.
	Busy uint64
	// Shed counts transfers ended to make room for a new request: the
	// oldest unanswered one, or one whose client went silent.
	Shed uint64
	// Expired counts transfers ended because their client never sent
	// the first ACK within FirstACKWait.
	Expired uint64
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
	if cfg.MaxBlockSize != 0 && (cfg.MaxBlockSize < 512 || cfg.MaxBlockSize > 65464) {
		return nil, fmt.Errorf("TFTP: maximum block size %d is outside 512..65464 (RFC 2348)", cfg.MaxBlockSize)
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("TFTP: opening root %s: %w", cfg.Root, err)
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	if cfg.PerSource <= 0 {
		cfg.PerSource = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.FirstACKWait <= 0 {
		cfg.FirstACKWait = time.Second
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.Recorder == nil {
		cfg.Recorder = NopRecorder{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &TFTPServer{cfg: cfg, root: root, rec: cfg.Recorder, addrs: cfg.Addresses, log: cfg.Logger}
	t.cache.init(cfg.CacheBytes)
	// A nil write handler makes pin/tftp refuse every WRQ (the gate
	// refuses them before that).
	t.srv = tftp.NewServer(t.read, nil)
	t.srv.SetTimeout(cfg.Timeout)
	t.srv.SetRetries(5)
	// Retransmit on the timeout alone: pin/tftp's default backoff sleeps
	// up to a second more, during which the transfer cannot be ended.
	t.srv.SetBackoff(func(int) time.Duration { return 0 })
	return t, nil
}

// Stats returns the counters.
func (t *TFTPServer) Stats() TFTPStats {
	s := &t.stats
	return TFTPStats{Served: s.served.Load(), Denied: s.denied.Load(), Busy: s.busy.Load(), Failed: s.failed.Load(),
		Shed: s.shed.Load(), Expired: s.expired.Load()}
}

// Serve serves on conn until ctx is done, then stops with Shutdown and
// waits for running transfers (unanswered ones end within FirstACKWait).
// pin/tftp runs in its single-port mode behind tftpGate: every transfer
// is answered from conn, no socket is opened per transfer, and the gate
// sees every packet (see tftpGate for the limits it enforces). Serve
// owns conn from the call on.
func (t *TFTPServer) Serve(ctx context.Context, conn *net.UDPConn) error {
	blk := t.cfg.MaxBlockSize
	if blk == 0 {
		blk = 1468
		if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
			if a, ok := netip.AddrFromSlice(ua.IP); ok {
				if mtu := mtuOf(a); mtu > 0 {
					blk = min(max(mtu-32, 512), 65464)
				}
			}
		}
	}
	// Behind the gate pin/tftp cannot read the interface's MTU: negotiate
	// up to blk, whatever the client asks beyond it.
	t.srv.SetBlockSizeNegotiation(false)
	t.srv.SetBlockSize(blk)
	t.srv.EnableSinglePort()
	g := newTFTPGate(conn, t.cfg.MaxConcurrent, t.cfg.PerSource, t.cfg.FirstACKWait, t.cfg.Timeout, &t.stats)
	t.mu.Lock()
	t.gate = g
	t.mu.Unlock()

	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			g.stopping.Store(true)
			t.srv.Shutdown()
		case <-stop:
		}
	}()
	err := t.srv.Serve(g)
	close(stop)
	<-stopped
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
	ot, ok := rf.(tftp.OutgoingTransfer)
	if !ok {
		return errTFTPNotFound // not pin/tftp's sender: cannot happen
	}
	ra := ot.RemoteAddr()
	peerAP := ra.AddrPort()
	peerAP = netip.AddrPortFrom(peerAP.Addr().Unmap(), peerAP.Port())
	t.mu.Lock()
	g := t.gate
	t.mu.Unlock()
	defer g.done(peerAP)
	peer := peerAP.Addr().String()

	name, ok := CleanTFTPName(filename)
	if !ok {
		t.stats.denied.Add(1)
		t.log.Warn("tftp: refused filename", "peer", peer, "name", truncate(filename, 80))
		return errTFTPNotFound
	}
	src, size, closeSrc, err := t.open(name)
	if err != nil {
		t.stats.denied.Add(1)
		return errTFTPNotFound
	}
	defer closeSrc()
	ot.SetSize(size) // answers the tsize option
	n, err := rf.ReadFrom(src)
	if err != nil {
		t.stats.failed.Add(1)
		// UEFI PXE asks for the size first (tsize) and then aborts that
		// transfer on purpose before fetching for real: not worth a warning.
		t.log.Debug("tftp: transfer ended early", "peer", peer, "file", name, "sent", n, "err", err)
		// ReadFrom already aborted the transfer and closed it.
		return nil
	}
	t.stats.served.Add(1)
	// The MAC only labels the event: look it up once the client has its
	// file, not while it waits.
	mac := ""
	if t.addrs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if m, ok := t.addrs.Owner(ctx, peerAP.Addr()); ok {
			mac = m.String()
		}
		cancel()
	}
	t.rec.Event(Event{MAC: mac, Step: StepTFTP, Detail: fmt.Sprintf("file=%s bytes=%d peer=%s", name, n, peer)})
	return nil
}

// open returns the file's bytes to send and its size: from memory when
// it is cached and unchanged, else from the file (and cached if small).
// The name is always looked up through the root, so confinement and a
// replaced or removed file are checked on every request; what the cache
// saves is a read system call per block, and for a cached file the open
// and close (one stat checks it: on small files, at a thousand requests
// a second, those were a few percent of the server's CPU).
func (t *TFTPServer) open(name string) (io.Reader, int64, func(), error) {
	if fi, err := t.root.Stat(name); err == nil && fi.Mode().IsRegular() {
		if data, ok := t.cache.get(name, fi); ok {
			return bytes.NewReader(data), fi.Size(), func() {}, nil
		}
	}
	f, fi, err := openRegular(t.root, name)
	if err != nil {
		return nil, 0, nil, err
	}
	if data, ok := t.cache.get(name, fi); ok {
		f.Close()
		return bytes.NewReader(data), fi.Size(), func() {}, nil
	}
	if fi.Size() <= t.cache.maxFile() {
		data := make([]byte, fi.Size())
		_, err := io.ReadFull(f, data)
		f.Close()
		if err != nil {
			return nil, 0, nil, err
		}
		t.cache.put(name, fi, data)
		return bytes.NewReader(data), fi.Size(), func() {}, nil
	}
	return f, fi.Size(), func() { f.Close() }, nil
}

// tftpCache keeps small files in memory, keyed by name and checked
// against the file's identity, size and modification time on each use.
type tftpCache struct {
	mu    sync.Mutex
	limit int64
	used  int64
	files map[string]cachedFile
}

type cachedFile struct {
	fi   fs.FileInfo
	data []byte
}

func (c *tftpCache) init(limit int64) {
	c.limit = limit
	c.files = make(map[string]cachedFile)
}

func (c *tftpCache) maxFile() int64 { return c.limit / 8 }

func (c *tftpCache) get(name string, fi fs.FileInfo) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cf, ok := c.files[name]
	if !ok {
		return nil, false
	}
	if !os.SameFile(cf.fi, fi) || cf.fi.Size() != fi.Size() || !cf.fi.ModTime().Equal(fi.ModTime()) {
		delete(c.files, name)
		c.used -= int64(len(cf.data))
		return nil, false
	}
	return cf.data, true
}

func (c *tftpCache) put(name string, fi fs.FileInfo, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.files[name]; ok {
		c.used -= int64(len(old.data))
		delete(c.files, name)
	}
	if c.used+int64(len(data)) > c.limit {
		return // full: served from disk until a restart; a TFTP root holds a few binaries
	}
	c.files[name] = cachedFile{fi: fi, data: data}
	c.used += int64(len(data))
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
