// Package rack brings up a virtual rack on one host: a network namespace
// with a bridge (a private provisioning network that touches no other
// network), N QEMU machines (virtio NIC and disk, distinct MACs, software
// emulation) that stay powered off until their BMC powers them on, and one
// BMC per machine — the project's Redfish emulator (lab/redfish) or
// Debian's ipmi_sim (lab/ipmisim) — both of which really start and stop the
// QEMU process and honour the boot device (PXE or disk). It writes a rack
// manifest that `metalhall rack import` accepts.
//
// Everything lives inside the namespace: the bridge and its taps, the BMCs
// (on the namespace's own loopback) and the metalhall service that manages
// the rack (run it with [Rack.Command]). Only addresses of the rack's
// subnet (default 10.98.0.0/24) and the namespace's loopback are used.
//
// The process that called [Up] hosts the Redfish emulators and follows the
// ipmi_sim chassis logs: it must stay up while the rack is used. [Down]
// (or [Rack.Down]) removes everything; after a crash, Down(dir) finds what
// is left from the state file in the rack's directory. Both are idempotent.
package rack

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/lab/ipmisim"
	"github.com/metalhall/metalhall/lab/netns"
	"github.com/metalhall/metalhall/lab/qemu"
	"github.com/metalhall/metalhall/lab/redfish"
)

// Config describes a rack.
type Config struct {
	// Machines is the number of machines (1–100).
	Machines int
	// Firmware: bios, uefi or mixed (alternating, starting with bios).
	Firmware string
	// BMC: redfish, ipmi or mixed (two redfish, two ipmi, ...).
	BMC string
	// Dir holds the state file, the manifest, and per machine its disk,
	// serial log, UEFI variables and BMC files. Required; made if missing.
	Dir string

	// Subnet of the provisioning network (default 10.98.0.0/24). The
	// first address is the bridge (the service's address), machine i gets
	// the 10+i-th.
	Subnet netip.Prefix
	// MemoryMiB per machine (default 512); DiskMiB the size of each
	// machine's sparse virtual disk (default 64).
	MemoryMiB, DiskMiB int
	// NVMeDiskMiB gives every machine a second, emulated NVMe disk of
	// this size (0: none), for certified erase.
	NVMeDiskMiB int
	// Rack, Hall, Phase and Prefix name things in the manifest (defaults
	// lab-r01, lab-hall, 1, lab-m: machines lab-m01, lab-m02, ...).
	Rack, Hall, Prefix string
	Phase              int
	// Profile of every machine in the manifest (empty: none); Profiles
	// overrides it per machine name.
	Profile  string
	Profiles map[string]string
	// BMCUser and BMCPassword of every BMC (default admin / lab-secret).
	BMCUser, BMCPassword string
	// FabricNICs gives every machine this many fabric NICs (0 to
	// MaxFabricNICs) besides its boot NIC, cabled rail by rail to one
	// simulated leaf switch each (Debian's lldpd, see fabric.go); the
	// manifest carries the cabling plan.
	FabricNICs int
	// Miscabled names machines whose first two fabric cables are swapped
	// at the leaves; their manifest plan stays as designed.
	Miscabled []string
	// Log gets one line per BMC action and machine power change (nil:
	// discarded).
	Log io.Writer
}

// Machine is one QEMU machine of the rack and its BMC.
type Machine struct {
	Name     string
	MAC      net.HardwareAddr
	IP       netip.Addr
	Firmware qemu.Firmware
	// BMCProtocol is redfish or ipmi; BMCAddress what the manifest says
	// (http://127.0.0.1:PORT or 127.0.0.1:PORT, in the namespace).
	BMCProtocol, BMCAddress string
	Dir, Disk, Tap          string
	NVMeDisk                string // the NVMe disk's file ("" when none)
	// FabricTaps and FabricMACs are the fabric NICs' taps and MACs.
	FabricTaps []string
	FabricMACs []net.HardwareAddr

	r        *Rack
	redfish  *redfish.Server
	ipmi     *ipmisim.Sim
	serial   *serialRelay // IPMI machines: the serial port wired to the BMC's SOL
	mu       sync.Mutex
	boot     string // pxe, disk, default
	cmd      *exec.Cmd
	done     chan struct{}
	killed   bool
	boots    int
	lastBoot string
	hung     bool
}

// Rack is a running virtual rack.
type Rack struct {
	Config
	NS       *netns.Namespace
	Server   netip.Addr // the bridge's address: the service's --advertise-address
	Bridge   string
	Machines []*Machine
	// Manifest is the path of the rack manifest (YAML).
	Manifest string

	log      *log.Logger
	httpSrvs []*http.Server
	leaves   []*leaf
	stop     chan struct{}
	wg       sync.WaitGroup
	downOnce sync.Once
	downErr  error
}

// State is what the state file (DIR/lab.json) records for Down.
type State struct {
	Namespace string    `json:"namespace"`
	Dir       string    `json:"dir"`
	PID       int       `json:"pid"`
	Created   time.Time `json:"created"`
	Machines  []string  `json:"machines"`
}

// StateFile is the state file's name in Dir.
const StateFile = "lab.json"

// Available says why a rack cannot run here, or nil.
func Available(cfg Config) error {
	if err := netns.Available(); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errors.New("/dev/net/tun missing: QEMU taps need the tun driver")
	}
	if err := qemu.Available(qemu.UEFI); err != nil {
		if cfg.Firmware != "bios" {
			return err
		}
		if err := qemu.Available(qemu.BIOS); err != nil {
			return err
		}
	}
	if cfg.FabricNICs > 0 {
		if err := LLDPDAvailable(); err != nil {
			return err
		}
	}
	if cfg.BMC != "redfish" {
		if err := ipmisim.Available(); err != nil {
			return err
		}
		if _, err := exec.LookPath("ipmitool"); err != nil {
			return errors.New("ipmitool not found (Debian package ipmitool)")
		}
	}
	return nil
}

func (c *Config) defaults() error {
	if c.Machines < 1 || c.Machines > 100 {
		return fmt.Errorf("rack: Machines must be 1 to 100, not %d", c.Machines)
	}
	if c.Firmware == "" {
		c.Firmware = "mixed"
	}
	if c.BMC == "" {
		c.BMC = "mixed"
	}
	switch c.Firmware {
	case "bios", "uefi", "mixed":
	default:
		return fmt.Errorf("rack: firmware %q: want bios, uefi or mixed", c.Firmware)
	}
	switch c.BMC {
	case "redfish", "ipmi", "mixed":
	default:
		return fmt.Errorf("rack: BMC %q: want redfish, ipmi or mixed", c.BMC)
	}
	if c.Dir == "" {
		return errors.New("rack: Dir is required")
	}
	if c.FabricNICs < 0 || c.FabricNICs > MaxFabricNICs {
		return fmt.Errorf("rack: FabricNICs must be 0 to %d, not %d", MaxFabricNICs, c.FabricNICs)
	}
	if len(c.Miscabled) > 0 && c.FabricNICs < 2 {
		return fmt.Errorf("rack: Miscabled swaps two fabric cables: it needs FabricNICs 2 or more, not %d", c.FabricNICs)
	}
	if !c.Subnet.IsValid() {
		c.Subnet = netip.MustParsePrefix("10.98.0.0/24")
	}
	c.Subnet = c.Subnet.Masked()
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 24 {
		return fmt.Errorf("rack: subnet %s: want an IPv4 /24 or larger", c.Subnet)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 512
	}
	if c.DiskMiB == 0 {
		c.DiskMiB = 64
	}
	if c.Rack == "" {
		c.Rack = "lab-r01"
	}
	if c.Hall == "" {
		c.Hall = "lab-hall"
	}
	if c.Prefix == "" {
		c.Prefix = "lab-m"
	}
	if c.Phase == 0 {
		c.Phase = 1
	}
	if c.BMCUser == "" {
		c.BMCUser, c.BMCPassword = "admin", "lab-secret"
	}
	return nil
}

func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Up brings the rack up. On error, what was made is removed again.
func Up(ctx context.Context, cfg Config) (*Rack, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := Available(cfg); err != nil {
		return nil, fmt.Errorf("rack: %w", err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("rack: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err == nil {
		// A crashed rack left its state here: clean it up first.
		if err := Down(dir); err != nil {
			return nil, fmt.Errorf("rack: removing the rack left in %s: %w", dir, err)
		}
	}
	lw := cfg.Log
	if lw == nil {
		lw = io.Discard
	}
	r := &Rack{Config: cfg, Server: nthAddr(cfg.Subnet, 1), Bridge: "mhbr0",
		log: log.New(lw, "lab: ", log.Ltime), stop: make(chan struct{})}
	ns, err := netns.New(ctx, "mhlab")
	if err != nil {
		return nil, fmt.Errorf("rack: %w", err)
	}
	r.NS = ns
	st := State{Namespace: ns.Name, Dir: dir, PID: os.Getpid(), Created: time.Now().UTC()}
	if err := r.writeState(st); err != nil {
		ns.Close()
		return nil, err
	}
	fail := func(err error) (*Rack, error) {
		r.Down()
		return nil, err
	}
	if err := ns.AddBridge(ctx, r.Bridge, netip.PrefixFrom(r.Server, cfg.Subnet.Bits())); err != nil {
		return fail(fmt.Errorf("rack: %w", err))
	}
	for i := 0; i < cfg.Machines; i++ {
		m := &Machine{r: r, Name: fmt.Sprintf("%s%02d", cfg.Prefix, i+1), boot: "default",
			MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0x98, byte(i >> 8), byte(i + 1)},
			IP:  nthAddr(cfg.Subnet, 10+i), Tap: fmt.Sprintf("mhtap%d", i)}
		switch {
		case cfg.Firmware == "uefi", cfg.Firmware == "mixed" && i%2 == 1:
			m.Firmware = qemu.UEFI
		}
		m.BMCProtocol = "redfish"
		if cfg.BMC == "ipmi" || cfg.BMC == "mixed" && (i/2)%2 == 1 {
			m.BMCProtocol = "ipmi"
		}
		m.Dir = filepath.Join(dir, m.Name)
		m.Disk = filepath.Join(m.Dir, "disk.raw")
		if err := os.MkdirAll(m.Dir, 0o755); err != nil {
			return fail(fmt.Errorf("rack: %w", err))
		}
		if err := newDisk(m.Disk, int64(cfg.DiskMiB)<<20); err != nil {
			return fail(err)
		}
		if cfg.NVMeDiskMiB > 0 {
			m.NVMeDisk = filepath.Join(m.Dir, "nvme.raw")
			if err := newDisk(m.NVMeDisk, int64(cfg.NVMeDiskMiB)<<20); err != nil {
				return fail(err)
			}
		}
		if err := ns.AddTap(ctx, m.Tap, r.Bridge); err != nil {
			return fail(fmt.Errorf("rack: %w", err))
		}
		if err := r.addFabricTaps(ctx, i, m); err != nil {
			return fail(err)
		}
		if err := r.startBMC(ctx, m); err != nil {
			return fail(err)
		}
		r.Machines = append(r.Machines, m)
		st.Machines = append(st.Machines, m.Name)
	}
	if err := r.writeState(st); err != nil {
		return fail(err)
	}
	for _, name := range cfg.Miscabled {
		if r.Machine(name) == nil {
			return fail(fmt.Errorf("rack: Miscabled names %q, which is not a machine of the rack", name))
		}
	}
	if err := r.startLeaves(ctx); err != nil {
		return fail(err)
	}
	r.Manifest = filepath.Join(dir, "rack.yaml")
	if err := os.WriteFile(r.Manifest, []byte(r.ManifestYAML()), 0o644); err != nil {
		return fail(fmt.Errorf("rack: %w", err))
	}
	return r, nil
}

func newDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("rack: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("rack: %w", err)
	}
	return nil
}

func (r *Rack) writeState(st State) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := filepath.Join(r.Dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("rack: %w", err)
	}
	return os.Rename(tmp, filepath.Join(r.Dir, StateFile))
}

// startBMC starts m's BMC inside the namespace, on its loopback.
func (r *Rack) startBMC(ctx context.Context, m *Machine) error {
	if m.BMCProtocol == "redfish" {
		var ln net.Listener
		if err := r.NS.Run(func() (err error) {
			ln, err = net.Listen("tcp4", "127.0.0.1:0")
			return err
		}); err != nil {
			return fmt.Errorf("rack: redfish BMC of %s: %w", m.Name, err)
		}
		m.redfish = redfish.NewServer(redfish.Config{
			Username: r.BMCUser, Password: r.BMCPassword, Serial: "LAB-" + m.Name,
			Model: "QEMU " + m.Firmware.String(), GPUs: 0, MACs: []string{m.MAC.String()},
			Hooks: redfish.Hooks{
				OnPower: func(on bool) error { return m.setPower(on) },
				OnBoot: func(target string) {
					switch strings.ToLower(target) {
					case "pxe":
						m.setBoot("pxe")
					case "hdd":
						m.setBoot("disk")
					default:
						m.setBoot("default")
					}
				},
			},
		})
		hs := &http.Server{Handler: m.redfish, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		r.httpSrvs = append(r.httpSrvs, hs)
		go hs.Serve(ln)
		m.BMCAddress = "http://" + ln.Addr().String()
		return nil
	}
	var sim *ipmisim.Sim
	var solLn net.Listener
	if err := r.NS.Run(func() (err error) {
		// ipmi_sim's Serial-over-LAN connects here: the machine's serial
		// port, through the relay.
		if solLn, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		sim, err = ipmisim.Start(ctx, ipmisim.Config{User: r.BMCUser, Password: r.BMCPassword, Dir: filepath.Join(m.Dir, "ipmi"),
			SOL: "tcp:" + solLn.Addr().String()})
		return err
	}); err != nil {
		if solLn != nil {
			solLn.Close()
		}
		return fmt.Errorf("rack: ipmi_sim BMC of %s: %w", m.Name, err)
	}
	m.ipmi = sim
	relay, err := newSerialRelay(solLn)
	if err != nil {
		solLn.Close()
		return fmt.Errorf("rack: serial port of %s: %w", m.Name, err)
	}
	m.serial = relay
	m.BMCAddress = sim.Addr()
	r.wg.Add(1)
	go r.followIPMI(m)
	return nil
}

// followIPMI applies what ipmi_sim's chassis_control script records
// ("power 0|1", "boot DEV", one a line) to the machine, in order.
func (r *Rack) followIPMI(m *Machine) {
	defer r.wg.Done()
	path := filepath.Join(m.ipmi.Dir(), "chassis.log")
	var off int64
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		f.Seek(off, io.SeekStart)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			off += int64(len(line)) + 1
			k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch k {
			case "power":
				if err := m.setPower(v == "1"); err != nil {
					r.log.Printf("%s: %v", m.Name, err)
				}
			case "boot":
				if strings.Contains(v, "pxe") {
					m.setBoot("pxe")
				} else if strings.Contains(v, "disk") || strings.Contains(v, "hd") {
					m.setBoot("disk")
				} else {
					m.setBoot("default")
				}
			}
		}
		f.Close()
	}
}

// ManifestYAML is the rack manifest for `metalhall rack import`.
func (r *Rack) ManifestYAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Virtual rack made by metalhall's lab (lab/rack) in %s.\n", r.Dir)
	fmt.Fprintf(&b, "# Its BMCs and machines live in network namespace %s.\n", r.NS.Name)
	fmt.Fprintf(&b, "rack:\n  name: %s\n  hall: %s\n  phase: %d\n  row: L\n  units: 42\n  power_kw: 20\n", r.Rack, r.Hall, r.Phase)
	fmt.Fprintf(&b, "machines:\n")
	for i, m := range r.Machines {
		fmt.Fprintf(&b, "  - name: %s   # %s firmware, %s BMC\n", m.Name, m.Firmware, m.BMCProtocol)
		fmt.Fprintf(&b, "    unit: %d\n    height: 1\n", i+1)
		fmt.Fprintf(&b, "    macs: [%q]\n", m.MAC.String())
		fmt.Fprintf(&b, "    bmc: {address: %q, protocol: %s, user: %q, password: %q}\n", m.BMCAddress, m.BMCProtocol, r.BMCUser, r.BMCPassword)
		fmt.Fprintf(&b, "    power_w: 500\n    ip: %s\n", m.IP)
		p := r.Profile
		if v, ok := r.Profiles[m.Name]; ok {
			p = v
		}
		if p != "" {
			fmt.Fprintf(&b, "    profile: %s\n", p)
		}
		b.WriteString(r.cablingYAML(i))
	}
	return b.String()
}

// Machine returns the machine called name, or nil.
func (r *Rack) Machine(name string) *Machine {
	for _, m := range r.Machines {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Command runs a program inside the rack's namespace (e.g. `metalhall
// serve` with --netboot-interface r.Bridge --advertise-address r.Server,
// or the metalhall CLI against http://127.0.0.1:8280 there).
func (r *Rack) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return r.NS.Command(ctx, name, args...)
}

// Down stops every machine and BMC and removes the namespace and the state
// file (the machines' disks and logs stay in Dir). It is idempotent.
func (r *Rack) Down() error {
	r.downOnce.Do(func() {
		close(r.stop)
		for _, m := range r.Machines {
			if m.ipmi != nil {
				m.ipmi.Stop()
			}
		}
		for _, s := range r.httpSrvs {
			s.Close()
		}
		r.wg.Wait()
		for _, m := range r.Machines {
			m.kill()
			if m.serial != nil {
				m.serial.Close()
			}
		}
		r.stopLeaves()
		r.downErr = Down(r.Dir)
	})
	return r.downErr
}

// Down removes what the rack in dir left: its QEMU and ipmi_sim processes
// (found by their command lines naming dir) and its namespace (from the
// state file). It is idempotent; a dir without a state file is not an
// error.
func Down(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	killUnder(dir)
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rack: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("rack: %s: %w", StateFile, err)
	}
	if st.Namespace != "" && strings.HasPrefix(st.Namespace, "mhlab-") {
		if _, err := os.Stat("/run/netns/" + st.Namespace); err == nil {
			// Anything else still running in it (a service started with
			// Command) goes first: a namespace is gone only with its last
			// process.
			killInNamespace(st.Namespace)
			out, err := exec.Command("ip", "netns", "del", st.Namespace).CombinedOutput()
			if err != nil {
				return fmt.Errorf("rack: ip netns del %s: %v: %s", st.Namespace, err, strings.TrimSpace(string(out)))
			}
		}
		os.RemoveAll(leafSocketDir(st.Namespace))
	}
	return os.Remove(filepath.Join(dir, StateFile))
}

// killUnder kills the QEMU and ipmi_sim processes whose command lines name
// a path under dir.
func killUnder(dir string) {
	for _, pid := range procs() {
		cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		s := strings.ReplaceAll(string(cl), "\x00", " ")
		if !strings.Contains(s, dir+"/") {
			continue
		}
		exe := strings.Fields(s)
		if len(exe) == 0 {
			continue
		}
		base := filepath.Base(exe[0])
		if strings.HasPrefix(base, "qemu-system") || base == "ipmi_sim" {
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// killInNamespace kills the processes whose network namespace is ns.
func killInNamespace(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func procs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}
