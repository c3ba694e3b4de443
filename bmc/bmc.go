// Package bmc controls machines out of band through their BMC, with
// bmclib/v2: power, boot device, inventory and the event log, over Redfish
// (bmclib's gofish provider) or IPMI (bmclib's ipmitool provider).
//
// A Controller bounds the work: a global limit on concurrent operations,
// and at most one operation at a time per BMC address, because BMCs have
// few sessions and handle concurrent commands badly. Every operation has a
// deadline, transient failures are retried with backoff, and every failure
// is a *Error whose Kind says what happened (wrong credentials, BMC
// unreachable, timeout, unsupported, protocol error).
//
// The package depends on no other metalhall package: the service adapts
// its inventory to Endpoint, Target and StatusSink.
package bmc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Protocol is the out-of-band protocol spoken to a BMC.
type Protocol string

// Protocols.
const (
	IPMI    Protocol = "ipmi"
	Redfish Protocol = "redfish"
)

// Endpoint is how to reach one BMC.
type Endpoint struct {
	// Address is host[:port]. For Redfish it may carry a scheme:
	// "http://10.1.7.7:8000" speaks plain HTTP; without a scheme it is
	// HTTPS (port 443 by default). IPMI defaults to UDP port 623.
	Address  string
	Protocol Protocol
	Username string
	// Password is kept in memory only; String and LogValue omit it.
	Password string
	// Auth is how to log in to a Redfish BMC (default: a session when the
	// BMC offers one, basic auth otherwise). IPMI ignores it.
	Auth AuthMode
	// System names the Redfish ComputerSystem to drive, by Id or Name.
	// Empty: the only one, or the only one that can be both reset and
	// boot-overridden. IPMI ignores it.
	System string
}

// String describes the endpoint without its password.
func (e Endpoint) String() string {
	return fmt.Sprintf("%s %s@%s", e.Protocol, e.Username, e.Address)
}

// LogValue keeps the password out of structured logs.
func (e Endpoint) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("address", e.Address),
		slog.String("protocol", string(e.Protocol)),
		slog.String("user", e.Username),
	)
}

// GoString keeps the password out of %#v.
func (e Endpoint) GoString() string { return "bmc.Endpoint{" + e.String() + "}" }

// Format keeps the password out of every fmt verb (%v, %+v, %#v, %s).
func (e Endpoint) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, e.GoString())
		return
	}
	fmt.Fprint(f, e.String())
}

// hostPort splits Address into scheme ("", "http" or "https"), host and
// port, applying the protocol's default port.
func (e Endpoint) hostPort() (scheme, host, port string, err error) {
	a := strings.TrimSpace(e.Address)
	if i := strings.Index(a, "://"); i >= 0 {
		scheme, a = strings.ToLower(a[:i]), a[i+3:]
		if scheme != "http" && scheme != "https" {
			return "", "", "", fmt.Errorf("unsupported scheme %q in BMC address", scheme)
		}
	}
	a = strings.TrimSuffix(a, "/")
	if a == "" {
		return "", "", "", fmt.Errorf("empty BMC address")
	}
	host, port, err = net.SplitHostPort(a)
	if err != nil {
		// No port (or a bare IPv6 address).
		host, port = strings.Trim(a, "[]"), ""
	}
	if port == "" {
		switch {
		case e.Protocol == IPMI:
			port = "623"
		case scheme == "http":
			port = "80"
		default:
			port = "443"
		}
	}
	return scheme, host, port, nil
}

// lockKey identifies the BMC for per-BMC serialisation: one physical BMC
// is one host and port whatever the spelling of its address.
func (e Endpoint) lockKey() string {
	_, h, p, err := e.hostPort()
	if err != nil {
		return strings.ToLower(e.Address)
	}
	return strings.ToLower(net.JoinHostPort(h, p))
}

// PowerState is the chassis power, normalised across providers.
type PowerState string

// Power states.
const (
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
	PowerUnknown PowerState = "unknown"
)

// normalisePower maps the provider strings ("On", "Off", "PoweringOn",
// "Chassis Power is on\n", ...) to a PowerState.
func normalisePower(s string) PowerState {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "chassis power is ")
	switch s {
	case "on":
		return PowerOn
	case "off":
		return PowerOff
	}
	return PowerUnknown
}

// PowerAction is a power command.
type PowerAction string

// Power actions.
const (
	ActionOn    PowerAction = "on"    // power on (no-op if on)
	ActionOff   PowerAction = "off"   // hard power off
	ActionSoft  PowerAction = "soft"  // ACPI shutdown; the OS may take its time
	ActionCycle PowerAction = "cycle" // off then on; on if the machine was off
	ActionReset PowerAction = "reset" // warm reset
)

// target is the power state an action ends in.
func (a PowerAction) target() (PowerState, bool) {
	switch a {
	case ActionOn, ActionCycle, ActionReset:
		return PowerOn, true
	case ActionOff, ActionSoft:
		return PowerOff, true
	}
	return "", false
}

// BootDevice is a boot override target.
type BootDevice string

// Boot devices. The values are bmclib's.
const (
	BootPXE   BootDevice = "pxe"
	BootDisk  BootDevice = "disk"
	BootBIOS  BootDevice = "bios"
	BootCDROM BootDevice = "cdrom"
	BootNone  BootDevice = "none"
)

func (d BootDevice) valid() bool {
	switch d {
	case BootPXE, BootDisk, BootBIOS, BootCDROM:
		return true
	}
	return false
}

// BootOptions is a boot override request.
type BootOptions struct {
	Device BootDevice
	// Persistent keeps the override for every boot; otherwise it applies
	// to the next boot only.
	Persistent bool
	// UEFI asks for UEFI boot. On Redfish false actively asks for Legacy
	// (BIOS) mode, which some BMCs refuse.
	UEFI bool
}

// BootOverride is the boot override a BMC reports.
type BootOverride struct {
	Device     BootDevice
	Persistent bool
	UEFI       bool
	// Raw is the provider's own wording (Redfish target, IPMI selector).
	Raw string
}

// Inventory is what a BMC says about its machine.
type Inventory struct {
	Vendor, Model, Serial string
	BIOSVersion           string
	BMCFirmware           string
	GPUs                  []GPU
	NICs                  []NIC
	Disks                 []Disk
}

// GPU is an accelerator reported by the BMC.
type GPU struct {
	ID, Vendor, Model, Serial string
}

// NIC is a network interface reported by the BMC.
type NIC struct {
	ID, MAC   string
	SpeedMbps int
}

// Disk is a drive reported by the BMC.
type Disk struct {
	ID, Model, Serial string
	CapacityBytes     int64
}

// Event is one system event log entry.
type Event struct {
	ID          string
	Time        string // as the BMC wrote it
	Description string
	Message     string
	// Severity is the BMC's (Redfish) or metalhall's judgement of the
	// raw record (IPMI, ClassifyIPMIRecord); empty when unknown.
	Severity Severity
	// Reason says what the severity was judged by.
	Reason string
}

// Target is one machine for SyncPower.
type Target struct {
	Machine  string
	Endpoint Endpoint
}

// Status is what one contact with a machine's BMC said: a power read by
// SyncPower, or the outcome of a command.
type Status struct {
	Power     PowerState
	Reachable bool
	// Outcome classifies the contact: OutcomeOK, or an ErrorKind's Code.
	Outcome string
	// LastError is empty on success, otherwise the *Error's text.
	LastError string
	ReadAt    time.Time
	// ConsumedWatts is the machine's measured draw, where the power sync
	// could read one (Redfish PowerControl); WattsMeasured says so.
	ConsumedWatts float64
	WattsMeasured bool
	// Sensors is what the power sync read of the machine's health
	// (Redfish Thermal and Power); empty where it read none.
	Sensors Sensors
}

// OutcomeOK is the Outcome of a contact that succeeded.
const OutcomeOK = "ok"

// StatusOf is the one classification of a contact's outcome, for commands
// and the power sync alike. power is what was read (PowerUnknown when
// nothing was). A BMC that refused the password, could not do the
// operation or answered wrongly did answer: it is reachable.
func StatusOf(power PowerState, err error, at time.Time) Status {
	if power == "" {
		power = PowerUnknown
	}
	st := Status{Power: power, ReadAt: at.UTC()}
	if err == nil {
		st.Reachable, st.Outcome = true, OutcomeOK
		return st
	}
	st.LastError = err.Error()
	kind := KindProtocol
	var e *Error
	if errors.As(err, &e) {
		kind = e.Kind
	}
	st.Outcome = kind.Code()
	st.Reachable = kind == KindAuth || kind == KindProtocol || kind == KindUnsupported
	return st
}
