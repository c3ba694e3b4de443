package rack

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The lab's fabric is rail-optimised, as in a GPU cluster: fabric NIC k
// of every machine is cabled to leaf k+1 ("leaf-01", ...), machine N on
// port "EthernetN" of each leaf. A leaf is one Debian lldpd announcing
// its system name and, per port, a locally assigned port ID and a
// description, on the taps that are its ports. The leaves run in the
// rack's namespace next to the QEMU machines (QEMU opens the taps there
// at every power-on); each lldpd is confined to its own taps.

// MaxFabricNICs bounds Config.FabricNICs.
const MaxFabricNICs = 4

// FabricPCIAddress is the PCI address of fabric NIC k inside every lab
// machine: a fixed slot, so a cabling plan can name it.
func FabricPCIAddress(k int) string { return fmt.Sprintf("0000:00:%02x.0", 0x10+k) }

// LeafName is the LLDP system name of leaf k+1.
func LeafName(k int) string { return fmt.Sprintf("leaf-%02d", k+1) }

// LeafPort is the port of machine index i (0-based) on every leaf.
func LeafPort(i int) string { return fmt.Sprintf("Ethernet%d", i+1) }

// leaf is one running lldpd.
type leaf struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// LLDPDAvailable says why the lab cannot simulate leaves here, or nil.
func LLDPDAvailable() error {
	for _, b := range []string{"lldpd", "lldpcli"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found (Debian package lldpd)", b)
		}
	}
	return nil
}

// addFabricTaps makes m's fabric taps: on no bridge, each is one cable
// from the machine to a leaf port.
func (r *Rack) addFabricTaps(ctx context.Context, i int, m *Machine) error {
	for k := 0; k < r.FabricNICs; k++ {
		tap := fmt.Sprintf("mhf%d-%d", i, k)
		if err := r.NS.IP(ctx, "tuntap", "add", "dev", tap, "mode", "tap"); err != nil {
			return fmt.Errorf("rack: %w", err)
		}
		if err := r.NS.IP(ctx, "link", "set", tap, "up"); err != nil {
			return fmt.Errorf("rack: %w", err)
		}
		m.FabricTaps = append(m.FabricTaps, tap)
		m.FabricMACs = append(m.FabricMACs, net.HardwareAddr{0x52, 0x54, 0x00, 0x99, byte(i), byte(k)})
	}
	return nil
}

// fabricArgs are the QEMU arguments of m's fabric NICs: at fixed PCI
// slots, without an option ROM (the firmware never boots from them).
func (m *Machine) fabricArgs() []string {
	var args []string
	for k, tap := range m.FabricTaps {
		id := fmt.Sprintf("f%d", k)
		args = append(args, "-netdev", "tap,id="+id+",ifname="+tap+",script=no,downscript=no",
			"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,addr=0x%x,romfile=", id, m.FabricMACs[k], 0x10+k))
	}
	return args
}

// cabledTap is the tap that reaches port i of leaf k: machine i's NIC k,
// or its other first-two NIC when the machine is miscabled.
func (r *Rack) cabledTap(k, i int) string {
	m := r.Machines[i]
	if k < 2 && r.FabricNICs >= 2 && slices.Contains(r.Miscabled, m.Name) {
		return m.FabricTaps[1-k]
	}
	return m.FabricTaps[k]
}

// cableOf says which leaf port machine m's fabric NIC k is cabled to.
func (r *Rack) cableOf(m *Machine, k int) string {
	i := slices.Index(r.Machines, m)
	if r.cabledTap(k, i) != m.FabricTaps[k] {
		k = 1 - k
	}
	return LeafName(k) + " " + LeafPort(i)
}

// startLeaves starts one lldpd per leaf and configures it with lldpcli.
func (r *Rack) startLeaves(ctx context.Context) error {
	logs := filepath.Join(r.Dir, "leaves")
	// lldpcli drops root for _lldpd, which must reach the control
	// sockets: not under Dir, whose parents may be private (a test's
	// temporary directory).
	ctlDir := leafSocketDir(r.NS.Name)
	for _, d := range []string{logs, ctlDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("rack: %w", err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("rack: %w", err)
		}
	}
	for k := 0; k < r.FabricNICs; k++ {
		name := LeafName(k)
		ctl := filepath.Join(ctlDir, name+".ctl")
		var taps []string
		// tx-interval 1: a machine hears its leaf within a second of its
		// NIC coming up, not after the default 30 s.
		conf := [][]string{{"configure", "system", "hostname", name}, {"configure", "lldp", "tx-interval", "1"}}
		for i, m := range r.Machines {
			tap := r.cabledTap(k, i)
			taps = append(taps, tap)
			conf = append(conf, []string{"configure", "ports", tap, "lldp", "portidsubtype", "local", LeafPort(i), "description", "to " + m.Name})
		}
		// -L "": lldpd does not run lldpcli itself (and wait for it); this
		// process configures it before any machine is powered on, so no
		// announcement goes out before its names are set (a tap has no
		// carrier until QEMU opens it).
		cmd := r.NS.Command(ctx, "lldpd", "-d", "-L", "", "-u", ctl, "-p", filepath.Join(ctlDir, name+".pid"), "-I", strings.Join(taps, ","))
		logf, err := os.OpenFile(filepath.Join(logs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("rack: %w", err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("rack: starting lldpd for %s: %w", name, err)
		}
		logf.Close()
		l := &leaf{name: name, cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); close(l.done) }()
		r.leaves = append(r.leaves, l)
		if err := r.configureLeaf(ctx, l, ctl, conf); err != nil {
			return err
		}
		r.log.Printf("%s: lldpd on %s", name, strings.Join(taps, ","))
	}
	return nil
}

// leafSocketDir holds the leaves' control sockets and PID files of the
// rack in namespace ns.
func leafSocketDir(ns string) string { return filepath.Join("/run", ns+"-leaves") }

// configureLeaf sends the leaf's configuration, one lldpcli command at a
// time (so that each one's exit status counts), once its lldpd answers
// on its control socket.
func (r *Rack) configureLeaf(ctx context.Context, l *leaf, ctl string, conf [][]string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, c := range conf {
		for {
			out, err := r.NS.Command(ctx, "lldpcli", append([]string{"-u", ctl}, c...)...).CombinedOutput()
			if err == nil {
				break
			}
			select {
			case <-l.done:
				return fmt.Errorf("rack: lldpd for %s exited (see leaves/%s.log)", l.name, l.name)
			case <-ctx.Done():
				return fmt.Errorf("rack: lldpcli %s for %s: %v: %s", strings.Join(c, " "), l.name, err, strings.TrimSpace(string(out)))
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// stopLeaves stops the leaves' lldpd.
func (r *Rack) stopLeaves() {
	for _, l := range r.leaves {
		if l.cmd.Process != nil {
			l.cmd.Process.Kill()
		}
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
		}
	}
}

// cablingYAML is machine i's cabling plan for the manifest: the rack as
// designed, whatever Miscabled did to the cables.
func (r *Rack) cablingYAML(i int) string {
	if r.FabricNICs == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("    cabling:\n")
	for k := 0; k < r.FabricNICs; k++ {
		fmt.Fprintf(&b, "      - {nic: %q, switch: %s, port: %s}\n", FabricPCIAddress(k), LeafName(k), LeafPort(i))
	}
	return b.String()
}
