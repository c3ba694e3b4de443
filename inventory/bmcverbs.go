package inventory

import "fmt"

// PowerAction is a power command a request or a job carries. Parsed once
// where it enters (the API), it travels typed down to the BMC adapter.
type PowerAction string

// The power actions a job may run.
const (
	PowerOn    PowerAction = "on"
	PowerOff   PowerAction = "off"
	PowerCycle PowerAction = "cycle"
)

// PowerActions lists them, for messages.
var PowerActions = []PowerAction{PowerOn, PowerOff, PowerCycle}

// Valid says whether a is a power action.
func (a PowerAction) Valid() bool {
	switch a {
	case PowerOn, PowerOff, PowerCycle:
		return true
	}
	return false
}

// ParsePowerAction reads a power action.
func ParsePowerAction(s string) (PowerAction, error) {
	if a := PowerAction(s); a.Valid() {
		return a, nil
	}
	return "", &ValidationError{Field: "action", Msg: fmt.Sprintf("%q: use one of %v", s, PowerActions)}
}

// BootDevice is a boot override target.
type BootDevice string

// The boot devices a machine may be told to boot from.
const (
	BootPXE   BootDevice = "pxe"
	BootDisk  BootDevice = "disk"
	BootBIOS  BootDevice = "bios"
	BootCDROM BootDevice = "cdrom"
)

// BootDevices lists them, for messages.
var BootDevices = []BootDevice{BootPXE, BootDisk, BootBIOS, BootCDROM}

// Valid says whether d is a boot device.
func (d BootDevice) Valid() bool {
	switch d {
	case BootPXE, BootDisk, BootBIOS, BootCDROM:
		return true
	}
	return false
}

// ParseBootDevice reads a boot device.
func ParseBootDevice(s string) (BootDevice, error) {
	if d := BootDevice(s); d.Valid() {
		return d, nil
	}
	return "", &ValidationError{Field: "device", Msg: fmt.Sprintf("%q: use one of %v", s, BootDevices)}
}
