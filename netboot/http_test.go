package netboot

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

type httpFixture struct {
	srv    *httptest.Server
	booter *MemoryBooter
	rec    *MemoryRecorder
}

var (
	macHere  = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x10} // holds 127.0.0.1
	macOther = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x11}
)

func newHTTPFixture(t *testing.T) *httpFixture {
	t.Helper()
	addrs := NewMemoryAddresses()
	if err := addrs.AddSegment(Subnet{Prefix: netip.MustParsePrefix("127.0.0.0/8")}, netip.Addr{}, netip.Addr{}, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	addrs.Reserve(macHere, netip.MustParseAddr("127.0.0.1"), "here")
	addrs.Reserve(macOther, netip.MustParseAddr("127.0.0.2"), "other")
	ipxeDir := t.TempDir()
	os.WriteFile(filepath.Join(ipxeDir, "ipxe.efi"), []byte("MZ-efi-binary"), 0o644)
	files := fstest.MapFS{
		"agent/vmlinuz":        {Data: []byte("0123456789kernel")},
		"agent/initrd.cpio.gz": {Data: []byte("initrd-bytes")},
	}
	f := &httpFixture{booter: NewMemoryBooter(), rec: NewMemoryRecorder()}
	h, err := NewHTTPHandler(HTTPConfig{
		Booter: f.booter, Addresses: addrs, IPXERoot: ipxeDir, Files: files, Recorder: f.rec,
		CheckToken: func(_ context.Context, mac net.HardwareAddr, tok string) bool {
			return mac.String() == macOther.String() && tok == "good-token"
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	base := f.srv.URL
	prov := Boot{Kind: BootProvision, Kernel: base + "/boot/files/agent/vmlinuz", Initrds: []string{base + "/boot/files/agent/initrd.cpio.gz"}, Cmdline: "console=ttyS0 metalhall.token=abc"}
	f.booter.Set(macHere, prov)
	f.booter.Set(macOther, prov)
	return f
}

func (f *httpFixture) get(t *testing.T, path string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestHTTPScript(t *testing.T) {
	f := newHTTPFixture(t)
	code, body, hdr := f.get(t, "/boot/52:54:00:00:00:10.ipxe")
	if code != 200 {
		t.Fatalf("script: %d %s", code, body)
	}
	for _, want := range []string{
		"#!ipxe\n",
		"kernel " + f.srv.URL + "/boot/files/agent/vmlinuz initrd=initrd.cpio.gz console=ttyS0 metalhall.token=abc || goto failed\n",
		"initrd " + f.srv.URL + "/boot/files/agent/initrd.cpio.gz || goto failed\n",
		"boot || goto failed\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("script lacks %q:\n%s", want, body)
		}
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Error("script cacheable")
	}
	// Dash form of the MAC works too.
	if code, _, _ := f.get(t, "/boot/52-54-00-00-00-10.ipxe"); code != 200 {
		t.Errorf("dash MAC: %d", code)
	}
	// Another machine's script from this address: 404, unless the token is good.
	for path, want := range map[string]int{
		"/boot/52:54:00:00:00:11.ipxe":                  404,
		"/boot/52:54:00:00:00:11.ipxe?token=bad":        404,
		"/boot/52:54:00:00:00:11.ipxe?token=good-token": 200,
		"/boot/52:54:00:00:00:10.ipxe?token=good-token": 200, // owner anyway
		"/boot/52:54:00:00:00:12.ipxe":                  404,
		"/boot/not-a-mac.ipxe":                          404,
		"/boot/52:54:00:00:00:10":                       404,
		"/boot/52:54:00:00:00:10.ipxe.bak":              404,
	} {
		if code, body, _ := f.get(t, path); code != want {
			t.Errorf("%s: %d, want %d (%s)", path, code, want, body)
		}
	}
	if ev := f.rec.Events(); len(ev) == 0 || ev[0].Step != StepScript || ev[0].MAC != "52:54:00:00:00:10" {
		t.Errorf("events %+v", ev)
	}
}

func TestHTTPScriptKinds(t *testing.T) {
	f := newHTTPFixture(t)
	path := "/boot/52:54:00:00:00:10.ipxe"
	f.booter.Set(macHere, Boot{Kind: BootLocal})
	_, body, _ := f.get(t, path)
	if !strings.Contains(body, "sanboot --no-describe --drive 0x80") || !strings.Contains(body, "exit 0") {
		t.Errorf("local script:\n%s", body)
	}
	f.booter.Set(macHere, Boot{Kind: BootNone})
	if code, _, _ := f.get(t, path); code != 404 {
		t.Errorf("none: %d", code)
	}
	f.booter.Set(macHere, Boot{Kind: BootDiscovery, Script: "#!ipxe\necho custom\n"})
	if _, body, _ := f.get(t, path); body != "#!ipxe\necho custom\n" {
		t.Errorf("verbatim script: %q", body)
	}
	// A command line with a newline would inject iPXE commands.
	f.booter.Set(macHere, Boot{Kind: BootProvision, Kernel: "http://x/k", Cmdline: "a\nshell"})
	if code, body, _ := f.get(t, path); code != 500 || strings.Contains(body, "shell") {
		t.Errorf("injection: %d %q", code, body)
	}
	f.booter.Set(macHere, Boot{Kind: BootProvision, Kernel: "file:///etc/passwd"})
	if code, _, _ := f.get(t, path); code != 500 {
		t.Errorf("non-http kernel: %d", code)
	}
}

func TestHTTPFiles(t *testing.T) {
	f := newHTTPFixture(t)
	// Before any script, a kernel is just a file of the address's owner.
	if code, _, _ := f.get(t, "/boot/files/agent/vmlinuz"); code != 200 {
		t.Fatalf("kernel before the script: %d", code)
	}
	// The script's decision labels what follows; the Booter's answer may
	// change meanwhile without relabelling fetches of the boot under way.
	if code, _, _ := f.get(t, "/boot/52:54:00:00:00:10.ipxe"); code != 200 {
		t.Fatalf("script: %d", code)
	}
	f.booter.Set(macHere, Boot{Kind: BootLocal})
	code, body, _ := f.get(t, "/boot/files/agent/vmlinuz", "Range", "bytes=10-")
	if code != http.StatusPartialContent || body != "kernel" {
		t.Fatalf("range: %d %q", code, body)
	}
	if code, body, _ := f.get(t, "/boot/files/agent/initrd.cpio.gz"); code != 200 || body != "initrd-bytes" {
		t.Fatalf("initrd: %d %q", code, body)
	}
	if code, body, _ := f.get(t, "/boot/ipxe/ipxe.efi"); code != 200 || body != "MZ-efi-binary" {
		t.Fatalf("ipxe: %d %q", code, body)
	}
	for _, p := range []string{"/boot/files/../http_test.go", "/boot/files/agent/%2e%2e/x", "/boot/ipxe/..%2fsecret", "/boot/files/agent", "/boot/files/nope", "/boot/ipxe/nope.efi"} {
		if code, _, _ := f.get(t, p); code != 404 && code != 400 && code != 301 {
			t.Errorf("%s: %d", p, code)
		}
	}
	var steps []string
	for _, e := range f.rec.Events() {
		steps = append(steps, string(e.Step)+":"+e.MAC)
	}
	want := "file:52:54:00:00:00:10 script:52:54:00:00:00:10 kernel:52:54:00:00:00:10 initrd:52:54:00:00:00:10 file:52:54:00:00:00:10"
	if got := strings.Join(steps, " "); got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
}
