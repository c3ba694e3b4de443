package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NVMe admin commands through the kernel's passthrough ioctl
// (linux/nvme_ioctl.h), so the initramfs needs no nvme-cli. The ioctl
// works on the namespace's block device: the kernel sends admin commands
// to its controller.

// nvmePassthru is struct nvme_passthru_cmd (72 bytes).
type nvmePassthru struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	CDW2, CDW3  uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	CDW10       uint32
	CDW11       uint32
	CDW12       uint32
	CDW13       uint32
	CDW14       uint32
	CDW15       uint32
	TimeoutMS   uint32
	Result      uint32
}

const (
	nvmeIoctlID       = 0x4E40     // _IO('N', 0x40): the namespace ID of an fd
	nvmeIoctlAdminCmd = 0xC0484E41 // _IOWR('N', 0x41, struct nvme_passthru_cmd)

	nvmeOpGetLogPage = 0x02
	nvmeOpIdentify   = 0x06
	nvmeOpFormatNVM  = 0x80
	nvmeOpSanitize   = 0x84

	nvmeLogSanitize = 0x81
	nvmeNSIDAll     = 0xFFFFFFFF

	sanactBlockErase  = 2
	sanactCryptoErase = 4

	sesUserData = 1
	sesCrypto   = 2
)

// nvmeStatusError is a command the controller completed with an error
// status: it does not support what was asked, or refused it.
type nvmeStatusError struct {
	Op     string
	Status uint32 // the status field: SCT in bits 10:8, SC in bits 7:0
}

func (e *nvmeStatusError) Error() string {
	sct, sc := (e.Status>>8)&7, e.Status&0xff
	name := ""
	if sct == 0 {
		switch sc {
		case 0x01:
			name = "invalid command opcode: "
		case 0x02:
			name = "invalid field in command: "
		case 0x0B:
			name = "invalid namespace or format: "
		case 0x1D:
			name = "sanitize failed: "
		case 0x1E:
			name = "sanitize in progress: "
		}
	}
	if sct == 1 && sc == 0x0A {
		name = "invalid format: "
	}
	return fmt.Sprintf("%s: %sstatus %#x (type %d, code %#x)", e.Op, name, e.Status, sct, sc)
}

// nvmeDev is an open NVMe namespace.
type nvmeDev struct {
	f    *os.File
	nsid uint32
}

func openNVMe(f *os.File) (*nvmeDev, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlID, 0)
	if e != 0 {
		if e == unix.ENOTTY || e == unix.EINVAL {
			return nil, fmt.Errorf("%w: not an NVMe namespace (%v)", errNotSupported, e)
		}
		return nil, fmt.Errorf("NVME_IOCTL_ID: %w", e)
	}
	return &nvmeDev{f: f, nsid: uint32(r)}, nil
}

// admin runs one admin command; data is the command's data buffer (in or
// out, as the opcode says).
func (d *nvmeDev) admin(op string, cmd *nvmePassthru, data []byte) error {
	if len(data) > 0 {
		// data is on the heap (callers make it) and Go's heap does not
		// move; KeepAlive keeps it until the kernel is done with it.
		cmd.Addr = uint64(uintptr(unsafe.Pointer(&data[0])))
		cmd.DataLen = uint32(len(data))
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(cmd)))
	runtime.KeepAlive(data)
	runtime.KeepAlive(cmd)
	if e != 0 {
		return fmt.Errorf("%s: %w", op, e)
	}
	if r != 0 {
		return &nvmeStatusError{Op: op, Status: uint32(r)}
	}
	return nil
}

// nvmeCaps is what Identify Controller and Identify Namespace say about
// erasing.
type nvmeCaps struct {
	Model, Serial, Firmware string
	Format                  bool // OACS bit 1: Format NVM supported
	FormatCrypto            bool // FNA bit 2: Format can crypto erase
	SanitizeCrypto          bool // SANICAP bit 0
	SanitizeBlock           bool // SANICAP bit 1
	SanitizeOverwrite       bool // SANICAP bit 2 (not used: slow, and a Format or overwrite is as good)
	// The namespace's current format, kept as it is by Format NVM.
	FLBAS uint8 // bits 3:0 and 6:5 the format index, bit 4 extended metadata
	DPS   uint8 // bits 2:0 protection type, bit 3 protection info first
}

// parseIdentifyController reads the fields erase needs from the 4 KiB
// Identify Controller data structure (NVMe base spec, figure "Identify
// Controller Data Structure").
func parseIdentifyController(b []byte, c *nvmeCaps) error {
	if len(b) < 4096 {
		return fmt.Errorf("identify controller: %d bytes, want 4096", len(b))
	}
	c.Serial = strings.TrimSpace(string(b[4:24]))
	c.Model = strings.TrimSpace(string(b[24:64]))
	c.Firmware = strings.TrimSpace(string(b[64:72]))
	oacs := binary.LittleEndian.Uint16(b[256:258])
	sanicap := binary.LittleEndian.Uint32(b[328:332])
	fna := b[524]
	c.Format = oacs&(1<<1) != 0
	c.FormatCrypto = c.Format && fna&(1<<2) != 0
	c.SanitizeCrypto = sanicap&(1<<0) != 0
	c.SanitizeBlock = sanicap&(1<<1) != 0
	c.SanitizeOverwrite = sanicap&(1<<2) != 0
	return nil
}

// parseIdentifyNamespace reads the current LBA format and protection
// settings from the Identify Namespace data structure.
func parseIdentifyNamespace(b []byte, c *nvmeCaps) error {
	if len(b) < 4096 {
		return fmt.Errorf("identify namespace: %d bytes, want 4096", len(b))
	}
	c.FLBAS, c.DPS = b[26], b[29]
	return nil
}

func (d *nvmeDev) identify() (nvmeCaps, error) {
	var c nvmeCaps
	buf := make([]byte, 4096)
	if err := d.admin("identify controller", &nvmePassthru{Opcode: nvmeOpIdentify, CDW10: 1}, buf); err != nil {
		return c, err
	}
	if err := parseIdentifyController(buf, &c); err != nil {
		return c, err
	}
	clear(buf)
	if err := d.admin("identify namespace", &nvmePassthru{Opcode: nvmeOpIdentify, NSID: d.nsid, CDW10: 0}, buf); err != nil {
		return c, err
	}
	return c, parseIdentifyNamespace(buf, &c)
}

// formatCDW10 builds Format NVM's dword 10: the namespace keeps its LBA
// format, metadata and protection settings; only SES changes.
func formatCDW10(c nvmeCaps, ses uint32) uint32 {
	lbafLow := uint32(c.FLBAS & 0x0F)
	lbafHigh := uint32(c.FLBAS>>5) & 0x3
	mset := uint32(c.FLBAS>>4) & 1
	pi := uint32(c.DPS & 0x7)
	pil := uint32(c.DPS>>3) & 1
	return lbafLow | mset<<4 | pi<<5 | pil<<8 | (ses&0x7)<<9 | lbafHigh<<12
}

// format runs Format NVM with a Secure Erase Setting. The command is
// synchronous and can take minutes on a large drive: the kernel's default
// admin timeout (60 s) is too short.
func (d *nvmeDev) format(c nvmeCaps, ses uint32) error {
	cmd := &nvmePassthru{Opcode: nvmeOpFormatNVM, NSID: d.nsid, CDW10: formatCDW10(c, ses), TimeoutMS: uint32(time.Hour / time.Millisecond)}
	return d.admin(fmt.Sprintf("format nvm (ses %d)", ses), cmd, nil)
}

// sanitizeStatus is the Sanitize Status log page (LID 0x81).
type sanitizeStatus struct {
	Progress uint16 // SPROG: fraction done, out of 65536
	Status   uint8  // SSTAT bits 2:0
}

const (
	sstatNever      = 0
	sstatDone       = 1
	sstatInProgress = 2
	sstatFailed     = 3
	sstatDoneNoDeal = 4 // completed, no-deallocate
)

func parseSanitizeStatus(b []byte) (sanitizeStatus, error) {
	if len(b) < 4 {
		return sanitizeStatus{}, fmt.Errorf("sanitize status log: %d bytes", len(b))
	}
	return sanitizeStatus{Progress: binary.LittleEndian.Uint16(b[0:2]), Status: uint8(binary.LittleEndian.Uint16(b[2:4]) & 0x7)}, nil
}

func (d *nvmeDev) sanitizeLog() (sanitizeStatus, error) {
	buf := make([]byte, 512)
	// NUMDL is the number of dwords minus one.
	cdw10 := uint32(nvmeLogSanitize) | uint32(len(buf)/4-1)<<16
	if err := d.admin("get log page (sanitize status)", &nvmePassthru{Opcode: nvmeOpGetLogPage, NSID: nvmeNSIDAll, CDW10: cdw10}, buf); err != nil {
		return sanitizeStatus{}, err
	}
	return parseSanitizeStatus(buf)
}

// errSanitizeFailed is a sanitize the controller ran and reports failed.
var errSanitizeFailed = errors.New("the controller reports the sanitize failed")

// sanitize starts a Sanitize (it covers the whole NVM subsystem, every
// namespace) and polls its status log until it ends. tick reports
// progress as a fraction in [0,1].
func (d *nvmeDev) sanitize(ctx context.Context, sanact uint32, every time.Duration, tick func(float64)) error {
	op := fmt.Sprintf("sanitize (action %d)", sanact)
	if err := d.admin(op, &nvmePassthru{Opcode: nvmeOpSanitize, CDW10: sanact & 0x7}, nil); err != nil {
		return err
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st, err := d.sanitizeLog()
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		switch st.Status {
		case sstatDone, sstatDoneNoDeal:
			return nil
		case sstatFailed:
			return fmt.Errorf("%s: %w", op, errSanitizeFailed)
		case sstatNever:
			return fmt.Errorf("%s: the status log says no sanitize ever ran", op)
		}
		tick(float64(st.Progress) / 65536)
		select {
		case <-ctx.Done():
			// The sanitize goes on inside the drive (and survives a
			// reset); the disk stays unusable until it ends.
			return fmt.Errorf("%s: still running at %d%%: %w", op, int(st.Progress)*100/65536, ctx.Err())
		case <-t.C:
		}
	}
}

const nvmeLogSMART = 0x02

// nvmeSMARTLog reads the SMART / Health Information log of the controller
// behind the namespace at path, with a 5 s command timeout: a controller
// that hangs does not hang the inspection.
func nvmeSMARTLog(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("SMART log: %w", err)
	}
	defer f.Close()
	d, err := openNVMe(f)
	if err != nil {
		return nil, fmt.Errorf("SMART log: %w", err)
	}
	buf := make([]byte, 512)
	cdw10 := uint32(nvmeLogSMART) | uint32(len(buf)/4-1)<<16
	if err := d.admin("get log page (SMART)", &nvmePassthru{Opcode: nvmeOpGetLogPage, NSID: nvmeNSIDAll, CDW10: cdw10, TimeoutMS: 5000}, buf); err != nil {
		return nil, fmt.Errorf("SMART log: %w", err)
	}
	return buf, nil
}
