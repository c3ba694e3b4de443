package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/agent/wire"
)

// Boot is the agent as PID 1 of the initramfs: mount the kernel
// filesystems, load modules, bring up the network, run the task, and
// power off or reboot. It never returns: PID 1 exiting panics the kernel.
func Boot() {
	// The kernel starts init with no PATH; overlays put programs (dcgmi,
	// nv-hostengine) where a shell would look for them.
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	mountEarly()
	log := bootLogger()
	log.Info("starting (pid 1)")
	after, err := boot(context.Background(), log)
	if err != nil {
		log.Error("failed", "err", err)
	}
	finish(log, after)
}

// mountEarly mounts /proc, /sys and /dev. Errors are printed raw to
// whatever stderr is: there may be no console yet.
func mountEarly() {
	for _, m := range []struct{ dir, fs string }{{"/proc", "proc"}, {"/sys", "sysfs"}, {"/dev", "devtmpfs"}, {"/run", "tmpfs"}, {"/tmp", "tmpfs"}} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.fs, m.dir, m.fs, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Fprintf(os.Stderr, "%smount %s: %v\n", LinePrefix, m.dir, err)
		}
	}
}

// bootLogger logs to /dev/console, and to /dev/kmsg at debug priority so
// the lines are in dmesg without being echoed to the console twice.
func bootLogger() *slog.Logger {
	// The initramfs has no /dev/console node (newc entries from the cpio
	// library carry no device numbers), so the kernel gave us no stdio:
	// take the console from devtmpfs now.
	if c, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd <= 2; fd++ {
			unix.Dup3(int(c.Fd()), fd, 0)
		}
	}
	var w io.Writer = os.Stdout
	if k, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		w = io.MultiWriter(os.Stdout, &kmsgWriter{k})
	}
	return slog.New(NewConsoleHandler(w, slog.LevelInfo))
}

type kmsgWriter struct{ f *os.File }

func (k *kmsgWriter) Write(p []byte) (int, error) {
	// "<7>" is KERN_DEBUG: kept in the ring buffer, below the default
	// console level. Errors writing the kernel log are not worth failing for.
	k.f.Write(append([]byte("<7>"), p...))
	return len(p), nil
}

func boot(ctx context.Context, log *slog.Logger) (wire.After, error) {
	loadModules(log)
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return wire.AfterPoweroff, fmt.Errorf("%s: %w", wire.StepBoot, err)
	}
	p := ParseCmdline(string(cmdline))
	if p.URL == "" {
		return wire.AfterPoweroff, fmt.Errorf("%s: no %s= on the kernel command line: nothing to call home to", wire.StepBoot, wire.ParamURL)
	}
	if p.Token == "" {
		return wire.AfterPoweroff, fmt.Errorf("%s: no %s= on the kernel command line", wire.StepBoot, wire.ParamToken)
	}
	netTimeout := 3 * time.Minute
	if p.Timeout > 0 {
		netTimeout = p.Timeout
	}
	nctx, cancel := context.WithTimeout(ctx, netTimeout)
	err = setupNetwork(nctx, log, p.MAC)
	cancel()
	if err != nil {
		return wire.AfterPoweroff, fmt.Errorf("%s: %w", wire.StepNetwork, err)
	}
	r := &Runner{Client: &Client{BaseURL: p.URL, Token: p.Token}, Root: "/", DevDir: "/dev", Log: log, TaskTimeout: p.Timeout}
	return r.Run(ctx)
}

// loadModules loads what the boot environment listed, in its order
// (dependencies first). A module that fails is logged and skipped: a
// driver for absent hardware is no reason not to boot.
func loadModules(log *slog.Logger) {
	f, err := os.Open(wire.ModulesOrderPath)
	if err != nil {
		log.Warn("no module list", "err", err)
		return
	}
	paths, err := ReadModulesOrder(f)
	f.Close()
	if err != nil {
		log.Warn("module list", "err", err)
	}
	var loaded, noHW, failed int
	for _, p := range paths {
		err := loadModule(p)
		switch {
		case err == nil || errors.Is(err, unix.EEXIST):
			loaded++
		case errors.Is(err, unix.ENODEV):
			// CPU-specific modules (crc32c-intel, crct10dif-pclmul)
			// refuse CPUs without the instructions: expected.
			noHW++
		default:
			log.Warn("module not loaded", "module", filepath.Base(p), "err", err)
			failed++
		}
	}
	log.Info("modules loaded", "loaded", loaded, "no_hardware", noHW, "failed", failed)
}

func loadModule(path string) error {
	img, compressed, err := moduleImage(path)
	if err != nil {
		return err
	}
	if compressed {
		return unix.InitModule(img, "")
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

// setupNetwork picks the NIC, runs DHCP on it and configures the lease.
func setupNetwork(ctx context.Context, log *slog.Logger, mac string) error {
	if err := setLinkUp("lo"); err != nil {
		log.Warn("loopback", "err", err)
	}
	ifc, err := pickInterface(ctx, log, mac)
	if err != nil {
		return err
	}
	log.Info("dhcp", "interface", ifc.Name, "mac", ifc.HardwareAddr.String())
	c, err := nclient4.New(ifc.Name, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return fmt.Errorf("dhcp on %s: %w", ifc.Name, err)
	}
	defer c.Close()
	var lease *nclient4.Lease
	for {
		lease, err = c.Request(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("dhcp on %s: no lease: %w", ifc.Name, err)
		}
		log.Warn("dhcp: no lease yet", "interface", ifc.Name, "err", err)
	}
	ack := lease.ACK
	ones, _ := ack.SubnetMask().Size()
	if ack.SubnetMask() == nil {
		ones = 24
	}
	if err := addAddress(ifc.Index, ack.YourIPAddr, ones); err != nil {
		return err
	}
	var gw net.IP
	if r := ack.Router(); len(r) > 0 {
		gw = r[0]
		if err := addDefaultRoute(ifc.Index, gw); err != nil {
			return err
		}
	}
	if err := writeResolvConf(ack.DNS()); err != nil {
		log.Warn("resolv.conf", "err", err)
	}
	log.Info("network up", "interface", ifc.Name, "address", fmt.Sprintf("%s/%d", ack.YourIPAddr, ones), "gateway", gw, "server", ack.ServerIPAddr)
	return nil
}

// pickInterface waits for the NIC drivers to create their interfaces and
// returns the one with metalhall.mac, or else the first one that gets a
// carrier.
func pickInterface(ctx context.Context, log *slog.Logger, mac string) (net.Interface, error) {
	up := map[string]bool{}
	for {
		ifs, _ := net.Interfaces()
		var names []string
		for _, i := range ifs {
			// Ethernet only: IPoIB interfaces (20-byte addresses, the
			// ConnectX compute fabric) have carrier but no PXE/DHCP path
			// to the provisioning network.
			if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) != 6 {
				continue
			}
			names = append(names, i.Name)
			if !up[i.Name] {
				if err := setLinkUp(i.Name); err != nil {
					log.Warn("link up", "err", err)
				}
				up[i.Name] = true
			}
			if mac != "" {
				if strings.EqualFold(i.HardwareAddr.String(), mac) {
					return i, nil
				}
				continue
			}
			if c, _ := os.ReadFile("/sys/class/net/" + i.Name + "/carrier"); strings.TrimSpace(string(c)) == "1" {
				return i, nil
			}
		}
		if len(names) == 0 {
			names = []string{"none"}
		}
		select {
		case <-ctx.Done():
			if mac != "" {
				return net.Interface{}, fmt.Errorf("no interface with MAC %s (have %s)", mac, strings.Join(names, ", "))
			}
			return net.Interface{}, fmt.Errorf("no interface with a carrier (have %s): check the cabling and the NIC driver", strings.Join(names, ", "))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// finish syncs and powers off or reboots. It never returns.
func finish(log *slog.Logger, after wire.After) {
	unix.Sync()
	switch after {
	case wire.AfterReboot:
		log.Info("rebooting")
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	case wire.AfterNone:
		log.Info("done; staying up as asked")
		stayUp()
	default:
		log.Info("powering off")
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	// Reboot only returns on failure; PID 1 must not exit.
	log.Error("power control failed; halting here")
	stayUp()
}

// stayUp blocks for good. Not with an empty select: once the agent's
// other goroutines and timers are gone, the Go runtime takes a blocked
// program for a deadlock and exits with status 2 — and PID 1 exiting
// panics the kernel, which is what a machine waiting for its BMC to
// power-cycle it must not do. A sleeping goroutine is never a deadlock.
func stayUp() {
	for {
		time.Sleep(time.Hour)
	}
}
