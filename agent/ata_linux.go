package agent

import (
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

// ATA commands through SG_IO and the SCSI/ATA Translation's ATA
// PASS-THROUGH (16) (SAT-4), which libata implements for SATA disks
// behind AHCI and most SAS HBAs.

// sgIOHdr is struct sg_io_hdr (scsi/sg.h) on 64-bit Linux.
type sgIOHdr struct {
	InterfaceID    int32
	DxferDirection int32
	CmdLen         uint8
	MxSbLen        uint8
	IovecCount     uint16
	DxferLen       uint32
	Dxferp         uintptr
	Cmdp           uintptr
	Sbp            uintptr
	Timeout        uint32
	Flags          uint32
	PackID         int32
	_              [4]byte
	UsrPtr         uintptr
	Status         uint8
	MaskedStatus   uint8
	MsgStatus      uint8
	SbLenWr        uint8
	HostStatus     uint16
	DriverStatus   uint16
	Resid          int32
	Duration       uint32
	Info           uint32
}

const (
	sgIO          = 0x2285
	sgDxferNone   = -1
	sgDxferToDev  = -2
	sgDxferFromDv = -3

	ataPassThrough16 = 0x85
	ataProtoNonData  = 3
	ataProtoPIOIn    = 4
	ataProtoPIOOut   = 5

	ataIdentify              = 0xEC
	ataSecuritySetPassword   = 0xF1
	ataSecurityErasePrepare  = 0xF3
	ataSecurityEraseUnit     = 0xF4
	ataSecurityDisablePasswd = 0xF6
)

// ataPassword is the user password set for the erase and cleared by it
// (or by SECURITY DISABLE PASSWORD when the erase fails). It is fixed and
// documented so that an operator can unlock a disk left locked by a power
// loss in the middle: hdparm --user-master u --security-unlock metalhall-erase.
const ataPassword = "metalhall-erase"

// ataError is an ATA command the device or the translation refused.
type ataError struct {
	Op                                   string
	Status, HostStatus, DriverStatus     uint16
	SenseKey, ASC, ASCQ, ATAStatus, Errb byte
}

func (e *ataError) Error() string {
	return fmt.Sprintf("%s: refused (scsi status %#x, host %#x, driver %#x, sense key %#x asc %#x/%#x, ata status %#x error %#x)",
		e.Op, e.Status, e.HostStatus, e.DriverStatus, e.SenseKey, e.ASC, e.ASCQ, e.ATAStatus, e.Errb)
}

// ataCmd runs one command. proto is the ATA protocol; data is read into
// (PIO in) or written from (PIO out), one or more 512-byte sectors.
func ataCmd(f *os.File, op string, proto, cmd byte, features byte, data []byte, timeout time.Duration) error {
	cdb := make([]byte, 16)
	cdb[0] = ataPassThrough16
	cdb[1] = proto << 1
	dir := int32(sgDxferNone)
	switch proto {
	case ataProtoPIOIn:
		cdb[2] = 1<<3 | 1<<2 | 2 // T_DIR from device, BYT_BLOK, T_LENGTH in the sector count
		dir = sgDxferFromDv
	case ataProtoPIOOut:
		cdb[2] = 1<<2 | 2
		dir = sgDxferToDev
	default:
		cdb[2] = 1 << 5 // CK_COND: return the registers
	}
	cdb[4] = features
	cdb[6] = byte(len(data) / 512)
	cdb[14] = cmd
	sense := make([]byte, 32)
	h := &sgIOHdr{InterfaceID: 'S', DxferDirection: dir, CmdLen: 16, MxSbLen: uint8(len(sense)),
		Cmdp: uintptr(unsafe.Pointer(&cdb[0])), Sbp: uintptr(unsafe.Pointer(&sense[0])),
		Timeout: uint32(timeout / time.Millisecond)}
	if len(data) > 0 {
		h.DxferLen, h.Dxferp = uint32(len(data)), uintptr(unsafe.Pointer(&data[0]))
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), sgIO, uintptr(unsafe.Pointer(h)))
	runtime.KeepAlive(cdb)
	runtime.KeepAlive(sense)
	runtime.KeepAlive(data)
	runtime.KeepAlive(h)
	if e != 0 {
		if e == unix.ENOTTY || e == unix.EINVAL {
			return fmt.Errorf("%w: %s: no SG_IO on this device (%v)", errNotSupported, op, e)
		}
		return fmt.Errorf("%s: SG_IO: %w", op, e)
	}
	ae := &ataError{Op: op, Status: uint16(h.Status), HostStatus: h.HostStatus, DriverStatus: h.DriverStatus}
	parseSense(sense[:h.SbLenWr], ae)
	// With CK_COND the translation reports CHECK CONDITION with sense
	// "ATA pass-through information available" (asc/ascq 0/0x1d) on
	// success: the ATA status register decides.
	if ae.SenseKey == 0 && ae.ASC == 0 && ae.ASCQ == 0x1D {
		if ae.ATAStatus&0x01 != 0 { // ERR
			return ae
		}
		return nil
	}
	if h.Status != 0 || h.HostStatus != 0 || h.DriverStatus&^0x08 != 0 { // DRIVER_SENSE alone is not an error
		return ae
	}
	return nil
}

// parseSense reads the sense key, ASC/ASCQ and, from descriptor-format
// sense, the ATA Status Return descriptor (type 9).
func parseSense(s []byte, ae *ataError) {
	if len(s) < 8 {
		return
	}
	switch s[0] & 0x7F {
	case 0x72, 0x73:
		ae.SenseKey, ae.ASC, ae.ASCQ = s[1]&0x0F, s[2], s[3]
		for d := s[8:min(len(s), 8+int(s[7]))]; len(d) >= 2; d = d[min(len(d), 2+int(d[1])):] {
			if d[0] == 0x09 && len(d) >= 14 {
				ae.Errb, ae.ATAStatus = d[3], d[13]
			}
		}
	case 0x70, 0x71:
		if len(s) >= 14 {
			ae.SenseKey, ae.ASC, ae.ASCQ = s[2]&0x0F, s[12], s[13]
		}
	}
}

// ataCaps is what IDENTIFY DEVICE says about the Security feature set.
type ataCaps struct {
	Model, Serial                     string
	Security                          bool // word 82 bit 1
	Enabled, Locked, Frozen, Expired  bool // word 128 bits 1-4
	Enhanced                          bool // word 128 bit 5
	EraseTime, EnhancedTime           time.Duration
	eraseTimeKnown, enhancedTimeKnown bool
}

// ataString decodes an IDENTIFY string: two characters per word, the
// first in the high byte.
func ataString(b []byte) string {
	out := make([]byte, len(b))
	for i := 0; i+1 < len(b); i += 2 {
		out[i], out[i+1] = b[i+1], b[i]
	}
	return strings.TrimSpace(string(out))
}

// ataEraseTime decodes words 89/90: 2-minute units, in bits 7:0 (or
// 14:0 when bit 15 says the extended format is used); 0 means unknown.
func ataEraseTime(w uint16) (time.Duration, bool) {
	v := w & 0xFF
	if w&0x8000 != 0 {
		v = w & 0x7FFF
	}
	if v == 0 {
		return 0, false
	}
	return time.Duration(v) * 2 * time.Minute, true
}

func parseATAIdentify(b []byte) (ataCaps, error) {
	if len(b) < 512 {
		return ataCaps{}, fmt.Errorf("identify device: %d bytes, want 512", len(b))
	}
	w := func(i int) uint16 { return binary.LittleEndian.Uint16(b[2*i:]) }
	c := ataCaps{Serial: ataString(b[20:40]), Model: ataString(b[54:94])}
	c.Security = w(82)&(1<<1) != 0 && w(82) != 0xFFFF
	sec := w(128)
	if c.Security && sec&1 != 0 {
		c.Enabled, c.Locked, c.Frozen, c.Expired = sec&(1<<1) != 0, sec&(1<<2) != 0, sec&(1<<3) != 0, sec&(1<<4) != 0
		c.Enhanced = sec&(1<<5) != 0
	} else {
		c.Security = false
	}
	c.EraseTime, c.eraseTimeKnown = ataEraseTime(w(89))
	c.EnhancedTime, c.enhancedTimeKnown = ataEraseTime(w(90))
	return c, nil
}

func identifyATA(f *os.File) (ataCaps, error) {
	buf := make([]byte, 512)
	if err := ataCmd(f, "identify device", ataProtoPIOIn, ataIdentify, 0, buf, 30*time.Second); err != nil {
		return ataCaps{}, err
	}
	return parseATAIdentify(buf)
}

// ataUsable says why the Security erase cannot run, or "" when it can.
func (c *ataCaps) ataUsable() string {
	switch {
	case !c.Security:
		return "the disk has no ATA Security feature set"
	case c.Frozen:
		return "ATA security is frozen (the firmware froze it at boot; a hot-plug or suspend/resume cycle unfreezes it)"
	case c.Locked:
		return "the disk is locked by a password metalhall does not know"
	case c.Enabled:
		return "a user password metalhall does not know is set"
	case c.Expired:
		return "the password attempt counter has expired: power-cycle the disk"
	}
	return ""
}

func ataPasswordSector(control uint16) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint16(b[0:], control)
	copy(b[2:34], ataPassword)
	return b
}

// ataSecureErase sets a user password, prepares and runs SECURITY ERASE
// UNIT (normal or enhanced), which clears the password again. The erase
// unit command blocks for as long as the drive says it needs (words
// 89/90), with margin; on failure the password is disabled so the disk
// is not left locked at its next power-on.
func ataSecureErase(f *os.File, c ataCaps, enhanced bool) error {
	est, known := c.EraseTime, c.eraseTimeKnown
	if enhanced {
		est, known = c.EnhancedTime, c.enhancedTimeKnown
	}
	timeout := 12 * time.Hour // unknown: what a large hard disk may need
	if known {
		timeout = est*2 + 10*time.Minute
	}
	if err := ataCmd(f, "security set password", ataProtoPIOOut, ataSecuritySetPassword, 0, ataPasswordSector(0), 30*time.Second); err != nil {
		return err
	}
	err := ataCmd(f, "security erase prepare", ataProtoNonData, ataSecurityErasePrepare, 0, nil, 30*time.Second)
	if err == nil {
		var ctl uint16
		if enhanced {
			ctl = 1 << 1
		}
		err = ataCmd(f, "security erase unit", ataProtoPIOOut, ataSecurityEraseUnit, 0, ataPasswordSector(ctl), timeout)
	}
	if err != nil {
		if derr := ataCmd(f, "security disable password", ataProtoPIOOut, ataSecurityDisablePasswd, 0, ataPasswordSector(0), 30*time.Second); derr != nil {
			return errors.Join(err, fmt.Errorf("the disk may be left with user password %q: %w", ataPassword, derr))
		}
		return err
	}
	return nil
}
