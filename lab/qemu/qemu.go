// Package qemu runs QEMU machines that network-boot with real firmware
// (SeaBIOS + iPXE, or OVMF + iPXE), for tests and the lab, and builds
// the small initramfs images they boot.
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Firmware is what the machine boots with.
type Firmware int

const (
	// BIOS is SeaBIOS with iPXE as the NIC's option ROM.
	BIOS Firmware = iota
	// UEFI is OVMF on q35 with iPXE's EFI driver as the NIC's ROM.
	UEFI
)

func (f Firmware) String() string {
	if f == UEFI {
		return "uefi"
	}
	return "bios"
}

// Paths of the Debian packages qemu-system-x86, ipxe-qemu and ovmf.
var (
	Binary   = "qemu-system-x86_64"
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// BIOSNICROM empty leaves QEMU's default romfile for virtio-net-pci:
	// efi-virtio.rom from its firmware path (on Debian /usr/lib/ipxe/qemu,
	// package ipxe-qemu), which carries a legacy iPXE image as well as the
	// EFI driver. Seen with QEMU 7.2 + SeaBIOS 1.16: with any explicit
	// romfile= (even that same file) SeaBIOS never runs the ROM, and
	// pxe-virtio.rom claims the modern virtio-net ID (1af4:1041), not the
	// transitional one of virtio-net-pci (1af4:1000).
	BIOSNICROM    = ""
	UEFINICROM    = "/usr/lib/ipxe/qemu/efi-virtio.rom"
	DefaultMemory = "512"
)

// Available says why a VM of this firmware cannot run here, or nil.
func Available(fw Firmware) error {
	if _, err := exec.LookPath(Binary); err != nil {
		return fmt.Errorf("%s not found (Debian package qemu-system-x86)", Binary)
	}
	need := []string{"/usr/lib/ipxe/qemu/efi-virtio.rom"}
	if fw == UEFI {
		need = []string{OVMFCode, OVMFVars, UEFINICROM}
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing (Debian packages ipxe-qemu, ovmf)", p)
		}
	}
	return nil
}

// Config describes a VM.
type Config struct {
	Firmware Firmware
	MAC      net.HardwareAddr
	Tap      string // tap device for the NIC (must exist where QEMU runs)
	Dir      string // working directory: serial log, UEFI variables
	Memory   string // MiB, default 512
	// FirmwareNIC leaves the NIC without an option ROM, so the firmware's
	// own driver and PXE client boot it (UEFI: OVMF's VirtioNetDxe and PXE
	// base code, which then TFTP-loads ipxe.efi: the full chain).
	FirmwareNIC bool
	// Wrap prefixes the QEMU command line, e.g. {"ip", "netns", "exec", NAME}
	// to run in a namespace that holds the tap.
	Wrap  []string
	Extra []string // more QEMU arguments (disks, ...)
}

// VM is a running QEMU process.
type VM struct {
	cmd    *exec.Cmd
	serial string
	stderr *bytes.Buffer
	done   chan struct{}
	err    error
	once   sync.Once
}

// Args returns the QEMU arguments for cfg (without Wrap).
func Args(cfg Config, serialPath, varsPath string) []string {
	mem := cfg.Memory
	if mem == "" {
		mem = DefaultMemory
	}
	// TCG: no KVM on these machines. -no-reboot turns a guest reboot or
	// panic into a QEMU exit, so a failed boot ends instead of looping.
	args := []string{"-accel", "tcg", "-m", mem, "-nographic", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + serialPath,
		"-netdev", "tap,id=n0,ifname=" + cfg.Tap + ",script=no,downscript=no"}
	nic := "virtio-net-pci,netdev=n0,mac=" + cfg.MAC.String()
	switch cfg.Firmware {
	case UEFI:
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+varsPath)
		if cfg.FirmwareNIC {
			nic += ",romfile="
		} else {
			nic += ",romfile=" + UEFINICROM
		}
	default:
		if BIOSNICROM != "" {
			nic += ",romfile=" + BIOSNICROM
		}
		args = append(args, "-boot", "n")
	}
	args = append(args, "-device", nic)
	return append(args, cfg.Extra...)
}

// Start starts the VM. Stop it (always: defer vm.Stop()).
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if len(cfg.MAC) != 6 || cfg.Tap == "" || cfg.Dir == "" {
		return nil, errors.New("qemu: MAC, Tap and Dir are required")
	}
	if err := Available(cfg.Firmware); err != nil {
		return nil, err
	}
	serial := filepath.Join(cfg.Dir, "serial.log")
	vars := filepath.Join(cfg.Dir, "OVMF_VARS.fd")
	if cfg.Firmware == UEFI {
		// The variable store is written by the firmware: each VM its own copy.
		b, err := os.ReadFile(OVMFVars)
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	argv := append(append([]string{}, cfg.Wrap...), Binary)
	argv = append(argv, Args(cfg, serial, vars)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	vm := &VM{cmd: cmd, serial: serial, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout = io.Discard
	cmd.Stderr = &limitedWriter{w: vm.stderr, n: 64 << 10}
	cmd.Stdin = nil
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: starting: %w", err)
	}
	go func() {
		vm.err = cmd.Wait()
		close(vm.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			vm.Stop()
		case <-vm.done:
		}
	}()
	return vm, nil
}

// Serial returns the serial console output so far.
func (vm *VM) Serial() string {
	b, _ := os.ReadFile(vm.serial)
	return string(b)
}

// Stderr returns what QEMU itself printed.
func (vm *VM) Stderr() string { return vm.stderr.String() }

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// FailMarkers are serial console lines that mean a boot has failed for
// good; WaitSerial returns at once when one shows.
var FailMarkers = []string{"No bootable device", "Kernel panic", "starting Boot0006 \"EFI Internal Shell\"", "Shell> "}

// WaitSerial waits until the serial console shows marker, a FailMarker
// shows, QEMU exits, or ctx ends.
func (vm *VM) WaitSerial(ctx context.Context, marker string) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		out := vm.Serial()
		if strings.Contains(out, marker) {
			return nil
		}
		for _, f := range FailMarkers {
			if strings.Contains(out, f) {
				return fmt.Errorf("qemu: boot failed (%q on the serial console)", f)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu: %q not on the serial console: %w", marker, ctx.Err())
		case <-vm.done:
			if strings.Contains(vm.Serial(), marker) {
				return nil
			}
			return fmt.Errorf("qemu: exited (%v) before %q showed on the serial console; stderr: %s", vm.err, marker, vm.Stderr())
		case <-t.C:
		}
	}
}

// Wait waits for QEMU to exit, or ctx.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop kills QEMU and waits for it. Killing `ip netns exec` would leave
// QEMU running: ip execs QEMU in place, so the PID is QEMU's own.
func (vm *VM) Stop() {
	vm.once.Do(func() {
		select {
		case <-vm.done:
			return
		default:
		}
		vm.cmd.Process.Kill()
		select {
		case <-vm.done:
		case <-time.After(10 * time.Second):
		}
	})
}

type limitedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.w.Len(); room > 0 {
		if len(p) > room {
			l.w.Write(p[:room])
		} else {
			l.w.Write(p)
		}
	}
	return len(p), nil
}
