package netboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
)

// HTTPConfig configures the HTTP boot handler.
type HTTPConfig struct {
	Booter    Booter
	Addresses Addresses // who holds a source IP; nil: only tokens authorise scripts
	// CheckToken validates the token query parameter of a script request
	// (e.g. a job-scoped token); nil: tokens are not accepted.
	CheckToken func(ctx context.Context, mac net.HardwareAddr, token string) bool
	IPXERoot   string    // directory of the iPXE binaries, served under /boot/ipxe/; empty: none
	Files      fs.FS     // boot artefacts (kernels, initrds), served under /boot/files/; nil: none
	Templates  Templates // script templates; zero: defaults
	Recorder   Recorder
	Logger     *slog.Logger
}

// HTTPHandler serves, for the service to mount at /boot/:
//
//	GET /boot/{mac}.ipxe        the iPXE script of a machine
//	GET /boot/ipxe/{file}       the iPXE binaries (UEFI HTTP boot)
//	GET /boot/files/{path...}   kernels and initrds, with Range
type HTTPHandler struct {
	cfg  HTTPConfig
	root *os.Root
	mux  *http.ServeMux
	log  *slog.Logger

	// served remembers, per client address, what the last script served
	// there named: kernel and initrd fetches are labelled from the
	// decision already taken, not by asking the Booter again (pixiecore
	// style: decide once, carry the decision).
	mu      sync.Mutex
	served  map[netip.Addr]servedBoot
	counted *httpMetrics
}

// servedBoot is a script's decision, as later fetches need it.
type servedBoot struct {
	mac, machine string
	kernel       string   // URL path
	initrds      []string // URL paths
}

// servedMax bounds what the handler remembers: one entry per address of
// the provisioning networks is plenty.
const servedMax = 1 << 16

// NewHTTPHandler returns the handler. Close it when done.
func NewHTTPHandler(cfg HTTPConfig) (*HTTPHandler, error) {
	if cfg.Booter == nil {
		return nil, errors.New("HTTP boot: a Booter is required")
	}
	if cfg.Recorder == nil {
		cfg.Recorder = NopRecorder{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Templates = cfg.Templates.withDefaults()
	h := &HTTPHandler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), served: make(map[netip.Addr]servedBoot)}
	if cfg.IPXERoot != "" {
		r, err := os.OpenRoot(cfg.IPXERoot)
		if err != nil {
			return nil, fmt.Errorf("HTTP boot: opening iPXE directory: %w", err)
		}
		h.root = r
	}
	h.mux.HandleFunc("GET /boot/{script}", h.serveScript)
	h.mux.HandleFunc("GET /boot/ipxe/{file}", h.serveIPXE)
	h.mux.HandleFunc("GET /boot/files/{path...}", h.serveFile)
	h.counted = newHTTPMetrics(h.mux)
	return h, nil
}

// Close releases the iPXE directory.
func (h *HTTPHandler) Close() error {
	if h.root != nil {
		return h.root.Close()
	}
	return nil
}

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.counted.ServeHTTP(w, r) }

func sourceIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// owner returns the MAC holding the request's source address, if known.
func (h *HTTPHandler) owner(r *http.Request) net.HardwareAddr {
	if h.cfg.Addresses == nil {
		return nil
	}
	ip := sourceIP(r)
	if !ip.IsValid() {
		return nil
	}
	mac, ok := h.cfg.Addresses.Owner(r.Context(), ip)
	if !ok {
		return nil
	}
	return mac
}

func (h *HTTPHandler) serveScript(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("script")
	macText, ok := strings.CutSuffix(name, ".ipxe")
	if !ok {
		http.NotFound(w, r)
		return
	}
	mac, err := net.ParseMAC(macText)
	if err != nil || len(mac) != 6 {
		http.NotFound(w, r)
		return
	}
	// Only the machine itself (by its lease) or a holder of a valid token
	// gets the script: it carries the job's token on the command line.
	// Anything else is a 404, which tells a prober nothing.
	authorised := false
	if tok := r.URL.Query().Get("token"); tok != "" && h.cfg.CheckToken != nil {
		authorised = h.cfg.CheckToken(r.Context(), mac, tok)
	}
	if !authorised {
		if o := h.owner(r); o != nil && o.String() == mac.String() {
			authorised = true
		}
	}
	if !authorised {
		h.log.Info("http boot: script refused", "mac", mac.String(), "from", r.RemoteAddr)
		http.NotFound(w, r)
		return
	}
	c := Client{MAC: mac, Arch: ArchUnknown, UserClass: "iPXE", IP: sourceIP(r)}
	boot, err := h.cfg.Booter.Boot(r.Context(), c)
	if err != nil {
		h.log.Warn("http boot: booter failed", "mac", mac.String(), "err", err)
		http.Error(w, "boot decision unavailable, retry", http.StatusServiceUnavailable)
		return
	}
	if !boot.Netboots() {
		http.NotFound(w, r)
		return
	}
	script, err := h.cfg.Templates.RenderScript(mac.String(), boot)
	if err != nil {
		h.log.Error("http boot: bad boot answer", "mac", mac.String(), "err", err)
		http.Error(w, "cannot render boot script", http.StatusInternalServerError)
		return
	}
	h.remember(sourceIP(r), mac.String(), boot)
	h.cfg.Recorder.Event(Event{MAC: mac.String(), Machine: boot.Machine, Step: StepScript, Detail: "boot=" + boot.Kind.String()})
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(script)
}

func (h *HTTPHandler) serveIPXE(w http.ResponseWriter, r *http.Request) {
	name, ok := CleanTFTPName(r.PathValue("file"))
	if !ok || h.root == nil {
		http.NotFound(w, r)
		return
	}
	f, fi, err := openRegular(h.root, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	h.record(r, StepFile, servedBoot{}, "ipxe/"+name)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

func (h *HTTPHandler) serveFile(w http.ResponseWriter, r *http.Request) {
	name, ok := CleanTFTPName(r.PathValue("path"))
	if !ok || h.cfg.Files == nil {
		http.NotFound(w, r)
		return
	}
	f, err := h.cfg.Files.Open(name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	step, sb := h.classify(r)
	h.record(r, step, sb, name)
	w.Header().Set("Content-Type", "application/octet-stream")
	if rs, ok := f.(io.ReadSeeker); ok {
		http.ServeContent(w, r, name, fi.ModTime(), rs)
		return
	}
	// No Seek: no Range either, but the whole file streams fine.
	w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
	w.Header().Set("Last-Modified", fi.ModTime().UTC().Format(http.TimeFormat))
	if r.Method != http.MethodHead {
		io.Copy(w, f)
	}
}

// remember keeps the decision a script carried for the fetches that follow
// from the same address.
func (h *HTTPHandler) remember(ip netip.Addr, mac string, b Boot) {
	if !ip.IsValid() {
		return
	}
	sb := servedBoot{mac: mac, machine: b.Machine, kernel: urlPath(b.Kernel)}
	for _, ird := range b.Initrds {
		sb.initrds = append(sb.initrds, urlPath(ird))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.served[ip]; !ok && len(h.served) >= servedMax {
		clear(h.served)
	}
	h.served[ip] = sb
}

func urlPath(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Path
}

// classify tells a kernel fetch from an initrd fetch by comparing the
// path with what the script served to the same address named; other
// files are StepFile. It also returns that decision (zero when none).
func (h *HTTPHandler) classify(r *http.Request) (Step, servedBoot) {
	ip := sourceIP(r)
	h.mu.Lock()
	sb, ok := h.served[ip]
	h.mu.Unlock()
	if !ok {
		return StepFile, servedBoot{}
	}
	switch {
	case sb.kernel != "" && sb.kernel == r.URL.Path:
		return StepKernel, sb
	case slices.Contains(sb.initrds, r.URL.Path):
		return StepInitrd, sb
	}
	return StepFile, sb
}

// record reports a file served. The MAC comes from the decision served
// to the same address when there is one, else from who holds the address.
func (h *HTTPHandler) record(r *http.Request, step Step, sb servedBoot, detail string) {
	if r.Method != http.MethodGet {
		return
	}
	mac, machine := sb.mac, sb.machine
	if mac == "" {
		if m := h.owner(r); m != nil {
			mac = m.String()
		}
	}
	if rg := r.Header.Get("Range"); rg != "" {
		detail += " range=" + truncate(rg, 64)
	}
	h.cfg.Recorder.Event(Event{MAC: mac, Machine: machine, Step: step, Detail: detail})
}
