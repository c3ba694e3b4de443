package rack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/lab/qemu"
)

// SerialLog is the machine's serial console log (all boots, appended).
func (m *Machine) SerialLog() string { return filepath.Join(m.Dir, "serial.log") }

// Serial returns the serial console output from byte offset from on.
func (m *Machine) Serial(from int64) string {
	f, err := os.Open(m.SerialLog())
	if err != nil {
		return ""
	}
	defer f.Close()
	f.Seek(from, io.SeekStart)
	b, _ := io.ReadAll(f)
	return string(b)
}

// SerialSize is the current length of the serial log: pass it to
// WaitSerial to wait for output that comes after now.
func (m *Machine) SerialSize() int64 {
	st, err := os.Stat(m.SerialLog())
	if err != nil {
		return 0
	}
	return st.Size()
}

// WaitSerial waits until marker shows on the serial console after byte
// offset from, or ctx ends.
func (m *Machine) WaitSerial(ctx context.Context, from int64, marker string) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if strings.Contains(m.Serial(from), marker) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %q not on the serial console: %w", m.Name, marker, ctx.Err())
		case <-t.C:
		}
	}
}

// NVMeSerial is the serial number of the machine's NVMe disk, as its
// Identify Controller reports it (at most 20 characters).
func (m *Machine) NVMeSerial() string {
	s := "MH" + strings.ToUpper(strings.ReplaceAll(m.Name, "-", ""))
	return s[:min(len(s), 20)]
}

// ReadDisk returns the first n bytes of the machine's virtual disk.
func (m *Machine) ReadDisk(n int) ([]byte, error) {
	f, err := os.Open(m.Disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = io.ReadFull(f, b)
	return b, err
}

// Running reports whether the machine's QEMU is running (power on).
func (m *Machine) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runningLocked()
}

func (m *Machine) runningLocked() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Boots is how many times the machine was powered on, and LastBoot the
// boot device of the last power-on (pxe, disk, default).
func (m *Machine) Boots() (int, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boots, m.lastBoot
}

// BootDevice is what the BMC set last (pxe, disk, default).
func (m *Machine) BootDevice() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boot
}

// HangBMC makes the machine's BMC stop answering (on) or answer again
// (off): a Redfish emulator that hangs every request, or a stopped
// (SIGSTOP) ipmi_sim.
func (m *Machine) HangBMC(on bool) error {
	m.mu.Lock()
	m.hung = on
	m.mu.Unlock()
	if m.redfish != nil {
		m.redfish.SetHang(on)
		return nil
	}
	if on {
		return m.ipmi.Suspend()
	}
	return m.ipmi.Resume()
}

// BMCPower is the power state the BMC reports.
func (m *Machine) BMCPower() bool {
	if m.redfish != nil {
		return m.redfish.Power()
	}
	on, _ := m.ipmi.Power()
	return on
}

func (m *Machine) setBoot(dev string) {
	m.mu.Lock()
	changed := m.boot != dev
	m.boot = dev
	m.mu.Unlock()
	if changed {
		m.r.log.Printf("%s: boot device %s", m.Name, dev)
	}
}

// setPower starts or stops the machine's QEMU; it is idempotent.
func (m *Machine) setPower(on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.r.stop:
		return errors.New("rack is going down")
	default:
	}
	if !on {
		if m.runningLocked() {
			m.r.log.Printf("%s: power off", m.Name)
			m.killLocked()
		}
		return nil
	}
	if m.runningLocked() {
		return nil
	}
	return m.startLocked()
}

func (m *Machine) killLocked() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	m.killed = true
	// Own process group (Setpgid): `ip netns exec` execs QEMU in place.
	syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	m.cmd.Process.Kill()
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
	}
}

func (m *Machine) kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.killLocked()
}

// Args returns the QEMU arguments of the machine for boot device dev.
func (m *Machine) Args(dev string) []string {
	nicIdx, diskIdx := "2", "1"
	if dev == "pxe" {
		nicIdx, diskIdx = "1", "2"
	}
	// The serial port goes to serial.log; on an IPMI machine also to the
	// BMC's Serial-over-LAN (through the lab's relay; QEMU connects at
	// start, before the guest runs, so nothing is lost from either).
	serial := "file,id=ser0,path=" + m.SerialLog() + ",append=on"
	if m.serial != nil {
		serial = "socket,id=ser0,path=" + m.serial.sock + ",server=off,logfile=" + m.SerialLog() + ",logappend=on"
	}
	args := []string{"-name", m.Name, "-accel", "tcg", "-m", fmt.Sprint(m.r.MemoryMiB),
		"-display", "none", "-monitor", "none", "-no-reboot",
		"-chardev", serial, "-serial", "chardev:ser0",
		"-netdev", "tap,id=n0,ifname=" + m.Tap + ",script=no,downscript=no",
		"-drive", "file=" + m.Disk + ",format=raw,if=none,id=d0",
		"-device", "virtio-blk-pci,drive=d0,bootindex=" + diskIdx,
		"-device", "virtio-rng-pci",
	}
	if m.NVMeDisk != "" {
		// No bootindex: the firmware never boots from it.
		args = append(args, "-drive", "file="+m.NVMeDisk+",format=raw,if=none,id=d1",
			"-device", "nvme,serial="+m.NVMeSerial()+",drive=d1")
	}
	nic := "virtio-net-pci,netdev=n0,mac=" + m.MAC.String() + ",bootindex=" + nicIdx
	if m.Firmware == qemu.UEFI {
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+qemu.OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+filepath.Join(m.Dir, "OVMF_VARS.fd"))
		nic += ",romfile=" + qemu.UEFINICROM
	}
	args = append(args, m.fabricArgs()...)
	return append(args, "-device", nic)
}

func (m *Machine) startLocked() error {
	if m.Firmware == qemu.UEFI {
		// A fresh variable store each power-on: the boot order comes from
		// the BMC's boot device (bootindex), not from what OVMF saved.
		b, err := os.ReadFile(qemu.OVMFVars)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		if err := os.WriteFile(filepath.Join(m.Dir, "OVMF_VARS.fd"), b, 0o644); err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	dev := m.boot
	argv := append([]string{"netns", "exec", m.r.NS.Name, qemu.Binary}, m.Args(dev)...)
	cmd := exec.Command("ip", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	errLog, err := os.OpenFile(filepath.Join(m.Dir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	cmd.Stdout, cmd.Stderr = errLog, errLog
	if err := cmd.Start(); err != nil {
		errLog.Close()
		return fmt.Errorf("%s: starting QEMU: %w", m.Name, err)
	}
	errLog.Close()
	done := make(chan struct{})
	m.cmd, m.done, m.killed = cmd, done, false
	m.boots++
	m.lastBoot = dev
	fmt.Fprintf(openAppend(m.SerialLog()), "\n[lab] %s power on #%d, boot %s, %s firmware\n", time.Now().UTC().Format(time.RFC3339), m.boots, dev, m.Firmware)
	m.r.log.Printf("%s: power on (boot %s)", m.Name, dev)
	go func() {
		cmd.Wait()
		close(done)
		m.mu.Lock()
		byGuest := !m.killed && m.cmd == cmd
		m.mu.Unlock()
		if byGuest {
			// The guest powered off (or QEMU ended): the BMC reads off.
			m.r.log.Printf("%s: powered itself off", m.Name)
			m.bmcSawOff()
		}
	}()
	return nil
}

// bmcSawOff tells the BMC the machine is off without running its hooks.
func (m *Machine) bmcSawOff() {
	if m.redfish != nil {
		m.redfish.SetPower(false)
		return
	}
	p := filepath.Join(m.ipmi.Dir(), "power")
	os.WriteFile(p+".lab", []byte("0\n"), 0o600)
	os.Rename(p+".lab", p)
}

type appendFile struct{ path string }

func (a appendFile) Write(b []byte) (int, error) {
	f, err := os.OpenFile(a.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Write(b)
}

func openAppend(p string) io.Writer { return appendFile{p} }
