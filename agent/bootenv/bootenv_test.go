package bootenv

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestOrder(t *testing.T) {
	dep := `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/nvme/host/nvme-core.ko.xz:
kernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz
`
	d, err := ParseModulesDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	order, missing := d.Order([]string{"virtio_net", "nvme", "virtio-ring", "nosuch"})
	want := []string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_net", "nvme_core", "nvme"}
	if !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if !slices.Equal(missing, []string{"nosuch"}) {
		t.Errorf("missing %v", missing)
	}
	if d.File["nvme_core"] != "kernel/drivers/nvme/host/nvme-core.ko.xz" {
		t.Errorf("file %q", d.File["nvme_core"])
	}
}

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// buildAgent builds the real static agent once per test binary.
func buildAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "metalhall-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "metalhall-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", agentPath, "github.com/metalhall/metalhall/cmd/metalhall-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = err
			t.Logf("%s", out)
		}
	})
	if agentErr != nil {
		t.Fatalf("building the agent: %v", agentErr)
	}
	return agentPath
}

func TestMain(m *testing.M) {
	// QEMU's guestfwd runs this test binary once per guest connection as
	// a relay to the fake service (see vmTask): a chardev forward would
	// squeeze every guest connection into one host stream.
	if addr := os.Getenv("METALHALL_TEST_RELAY"); addr != "" {
		os.Exit(relay(addr))
	}
	code := m.Run()
	if agentPath != "" {
		os.RemoveAll(filepath.Dir(agentPath))
	}
	os.Exit(code)
}

// debianKernel returns the installed kernel and its modules, or skips.
func debianKernel(t *testing.T) (string, string) {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, k := range ks {
		rel := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		md := filepath.Join("/lib/modules", rel)
		if _, err := os.Stat(filepath.Join(md, "modules.dep")); err == nil {
			if f, err := os.Open(k); err == nil { // root-only on some distros
				f.Close()
				return k, md
			}
		}
	}
	t.Skip("no readable /boot/vmlinuz-* with /lib/modules/<release>/modules.dep (Debian: apt install linux-image-amd64)")
	return "", ""
}

type entry struct {
	hdr  cpio.Header
	body []byte
}

func readArchive(t *testing.T, b []byte, c Compression) []entry {
	t.Helper()
	var r io.Reader
	switch c {
	case Gzip:
		z, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = z
	case Zstd:
		z, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer z.Close()
		r = z
	}
	cr := cpio.NewReader(r)
	var out []entry
	for {
		h, err := cr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(cr)
		out = append(out, entry{*h, body})
	}
}

func TestBuildDebianKernel(t *testing.T) {
	kernel, modDir := debianKernel(t)
	agent := buildAgent(t)
	for _, c := range []Compression{Gzip, Zstd} {
		t.Run(string(c), func(t *testing.T) {
			var buf bytes.Buffer
			m, err := Build(context.Background(), Options{Kernel: kernel, AgentBinary: agent, Compression: c, Out: &buf,
				ExtraModules: []string{"no_such_module", "af_packet"}})
			if err != nil {
				t.Fatal(err)
			}
			if m.Size != int64(buf.Len()) || len(m.SHA256) != 64 {
				t.Errorf("manifest size %d sha %q, archive %d bytes", m.Size, m.SHA256, buf.Len())
			}
			if !slices.Contains(m.Missing, "no_such_module") {
				t.Errorf("missing = %v, want no_such_module", m.Missing)
			}
			if !slices.Contains(m.Builtin, "af_packet") {
				t.Errorf("builtin = %v, want af_packet", m.Builtin)
			}
			ents := readArchive(t, buf.Bytes(), c)
			files := map[string]entry{}
			var names []string
			for _, e := range ents {
				files[e.hdr.Name] = e
				names = append(names, e.hdr.Name)
			}
			// Directories come before what is in them.
			seen := map[string]bool{}
			for _, n := range names {
				if d := filepath.Dir(n); d != "." && !seen[d] {
					t.Fatalf("%s comes before its directory %s", n, d)
				}
				seen[n] = true
			}
			init, ok := files["init"]
			if !ok || init.hdr.Mode.Perm() != 0o755 || !init.hdr.Mode.IsRegular() {
				t.Fatalf("no executable /init: %+v", init.hdr)
			}
			if ag, _ := os.ReadFile(agent); !bytes.Equal(ag, init.body) {
				t.Error("/init is not the agent binary")
			}
			order := strings.Fields(string(files["etc/metalhall/modules.order"].body))
			if len(order) != len(m.Modules) || len(order) < 20 {
				t.Fatalf("%d modules in modules.order, %d in the manifest", len(order), len(m.Modules))
			}
			pos := map[string]int{}
			for i, p := range order {
				e, ok := files[strings.TrimPrefix(p, "/")]
				if !ok {
					t.Fatalf("%s listed but not in the archive", p)
				}
				disk, _ := os.ReadFile(filepath.Join(modDir, strings.TrimPrefix(p, "/lib/modules/"+m.KernelRelease+"/")))
				if !bytes.Equal(disk, e.body) {
					t.Errorf("%s differs from the file in %s", p, modDir)
				}
				pos[ModuleName(p)] = i
			}
			for _, pair := range [][2]string{
				{"virtio_ring", "virtio_net"}, {"virtio", "virtio_net"}, {"virtio_ring", "virtio_pci"},
				{"virtio", "virtio_blk"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"},
				{"nvme_core", "nvme"}, {"libata", "ahci"}, {"scsi_mod", "sd_mod"}, {"mlxfw", "mlx5_core"},
				{"crc64_rocksoft_generic", "nvme"},
			} {
				a, okA := pos[pair[0]]
				b, okB := pos[pair[1]]
				if !okA || !okB || a >= b {
					t.Errorf("%s (at %d, %v) must load before %s (at %d, %v)", pair[0], a, okA, pair[1], b, okB)
				}
			}
			// Every dependency in modules.dep precedes its dependant.
			f, _ := os.Open(filepath.Join(modDir, "modules.dep"))
			deps, _ := ParseModulesDep(f)
			f.Close()
			for n, i := range pos {
				for _, d := range deps.Deps[n] {
					if j, ok := pos[d]; !ok || j >= i {
						t.Errorf("%s needs %s first", n, d)
					}
				}
			}
			t.Logf("%s: %d bytes, %d modules, builtin %v, missing %v", c, buf.Len(), len(order), m.Builtin, m.Missing)
		})
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	notStatic := filepath.Join(dir, "agent")
	os.WriteFile(notStatic, []byte("\x7fELF....../lib64/ld-linux-x86-64.so.2"), 0o755)
	os.WriteFile(filepath.Join(dir, "modules.dep"), nil, 0o644)
	_, err := Build(context.Background(), Options{KernelRelease: "x", ModulesDir: dir, AgentBinary: notStatic, Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic agent: err = %v", err)
	}
	_, err = Build(context.Background(), Options{Kernel: "/nonexistent/bzImage", AgentBinary: notStatic, Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "kernel release") {
		t.Errorf("unnamed kernel: err = %v", err)
	}
}

// relay copies stdin to addr and addr to stdout until both ends close.
func relay(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 1
	}
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(os.Stdout, c)
	return 0
}

// The qemu set is what the lab's machines need and nothing a server
// needs that QEMU does not: a subset of the server set, with the virtio
// drivers and NVMe, and a smaller archive from the same kernel.
func TestQEMUModuleSetIsASmallerSubset(t *testing.T) {
	for _, n := range QEMUModules {
		if !slices.Contains(ServerModules, n) {
			t.Errorf("qemu set has %s, the server set has not", n)
		}
	}
	for _, n := range []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "nvme"} {
		if !slices.Contains(QEMUModules, n) {
			t.Errorf("qemu set lacks %s", n)
		}
	}
	if _, err := ModuleSet("gpu"); err == nil || !strings.Contains(err.Error(), "server or qemu") {
		t.Errorf("unknown set: %v", err)
	}
	kernel, modDir := debianKernel(t)
	agent := buildAgent(t)
	size := map[string]int64{}
	for _, name := range []string{"server", "qemu"} {
		mods, err := ModuleSet(name)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Build(context.Background(), Options{Kernel: kernel, ModulesDir: modDir, Modules: mods, AgentBinary: agent, Out: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		size[name] = m.Size
		if name == "qemu" && len(m.Missing) > 0 {
			t.Errorf("qemu set: %v missing from %s", m.Missing, modDir)
		}
	}
	if size["qemu"] >= size["server"] {
		t.Errorf("qemu set %d bytes, server set %d", size["qemu"], size["server"])
	}
}
