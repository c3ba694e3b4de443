package wire

import "time"

// Hardware is what the agent reads for acceptance: the facts the
// service's acceptance checks judge against a profile. The agent only
// reports; the thresholds live in the profile, on the service, so a
// changed threshold is judged again without booting the machine.
type Hardware struct {
	PCIeLinks []PCIeLink   `json:"pcie_links"`
	DIMMs     []DIMM       `json:"dimms"`
	EDAC      []EDACCounts `json:"edac"`
	NVMe      []NVMeHealth `json:"nvme"`
	IBPorts   []IBPort     `json:"ib_ports"`
	// DMIError says why the SMBIOS table could not be read (DIMMs is then
	// empty because nothing is known, not because nothing is fitted).
	DMIError string `json:"dmi_error,omitempty"`
	// DCGM is the GPU diagnostic's outcome; nil when it was not asked for.
	DCGM *DCGMResult `json:"dcgm,omitempty"`
	// LLDP is what each Ethernet port heard; nil when it was not asked for.
	LLDP []LLDPPort `json:"lldp,omitempty"`
	// Burnin is the burn-in's outcome; nil when it was not asked for.
	Burnin *BurninResult `json:"burnin,omitempty"`
}

// Device kinds whose PCIe links are checked.
const (
	LinkGPU  = "gpu"
	LinkNIC  = "nic"
	LinkNVMe = "nvme"
)

// PCIeLink is a device's negotiated link against the most it can do
// (sysfs current_link_* and max_link_*). Speeds are in GT/s.
type PCIeLink struct {
	Address       string   `json:"address"`
	Kind          string   `json:"kind"` // LinkGPU, LinkNIC, LinkNVMe
	Name          string   `json:"name,omitempty"`
	SpeedGTs      float64  `json:"speed_gts"`
	Width         int      `json:"width"`
	MaxSpeedGTs   float64  `json:"max_speed_gts"`
	MaxWidth      int      `json:"max_width"`
	NetInterfaces []string `json:"net_interfaces,omitempty"` // for NICs
}

// DIMM is one memory device slot from SMBIOS (type 17). SizeMiB 0 is an
// empty slot.
type DIMM struct {
	Locator      string `json:"locator"`
	Bank         string `json:"bank,omitempty"`
	SizeMiB      int64  `json:"size_mib"`
	Type         string `json:"type,omitempty"` // DDR4, DDR5...
	SpeedMTs     int    `json:"speed_mts,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Serial       string `json:"serial,omitempty"`
	PartNumber   string `json:"part_number,omitempty"`
}

// EDACCounts are one memory controller's error counters since boot.
type EDACCounts struct {
	Controller  string `json:"controller"` // mc0
	Corrected   int64  `json:"corrected"`
	Uncorrected int64  `json:"uncorrected"`
	// DIMMs with errors, by label, when the driver reports per-DIMM counts.
	ByDIMM []DIMMErrors `json:"by_dimm,omitempty"`
}

// DIMMErrors are one DIMM's EDAC counters.
type DIMMErrors struct {
	Label       string `json:"label"`
	Corrected   int64  `json:"corrected"`
	Uncorrected int64  `json:"uncorrected"`
}

// NVMeHealth is an NVMe controller's SMART / Health Information log
// (log page 02h) and firmware revision. Error says why the log could not
// be read; the other fields are then zero and mean nothing.
type NVMeHealth struct {
	Disk            string `json:"disk"` // nvme0n1
	Model           string `json:"model,omitempty"`
	Serial          string `json:"serial,omitempty"`
	Firmware        string `json:"firmware,omitempty"`
	CriticalWarning uint8  `json:"critical_warning"` // bit field, 0 is healthy
	TemperatureK    int    `json:"temperature_k,omitempty"`
	AvailableSpare  int    `json:"available_spare"` // percent
	SpareThreshold  int    `json:"spare_threshold"` // percent
	PercentageUsed  int    `json:"percentage_used"` // of rated endurance, may exceed 100
	MediaErrors     uint64 `json:"media_errors"`
	ErrorLogEntries uint64 `json:"error_log_entries"`
	PowerOnHours    uint64 `json:"power_on_hours"`
	Error           string `json:"error,omitempty"`
}

// IBPort is one InfiniBand port (/sys/class/infiniband/DEV/ports/N).
type IBPort struct {
	Device     string  `json:"device"` // mlx5_0
	Port       int     `json:"port"`
	PCIAddress string  `json:"pci_address,omitempty"`
	State      string  `json:"state"`      // ACTIVE, DOWN, INIT, ARMED
	PhysState  string  `json:"phys_state"` // LinkUp, Polling, Disabled...
	RateGbps   float64 `json:"rate_gbps"`
	Rate       string  `json:"rate,omitempty"` // as sysfs says it: "400 Gb/sec (4X NDR)"
	LinkLayer  string  `json:"link_layer,omitempty"`
	PortGUID   string  `json:"port_guid,omitempty"`
	NodeGUID   string  `json:"node_guid,omitempty"`
	Firmware   string  `json:"firmware,omitempty"`
}

// DCGMResult is what `dcgmi diag` said, or why it did not run.
type DCGMResult struct {
	Ran    bool   `json:"ran"`
	Level  int    `json:"level"`
	Reason string `json:"reason,omitempty"` // why it did not run
	// Version is DCGM's own version, as its JSON says it (3.x or 4.x).
	Version string `json:"version,omitempty"`
	// Tests are the diagnostic's results; a test with Result "Fail" or
	// "Warn" carries DCGM's own words in Info.
	Tests []DCGMTest `json:"tests,omitempty"`
}

// DCGMTest is one test's result on one GPU (GPU -1: not per GPU).
type DCGMTest struct {
	Category string `json:"category,omitempty"`
	Name     string `json:"name"`
	GPU      int    `json:"gpu"`
	// Entity names what a result is about when it is not a GPU (DCGM 4.x
	// also tests CPUs and NVSwitches): "CPU 0".
	Entity string `json:"entity,omitempty"`
	Result string `json:"result"` // Pass, Fail, Warn, Skip
	Info   string `json:"info,omitempty"`
}

// AcceptanceTask is what a commissioning asks the agent to run beyond
// the inspection (Task.Acceptance).
type AcceptanceTask struct {
	// DCGMLevel: run `dcgmi diag -r LEVEL -j` (1 to 4) and put its result
	// in Hardware.DCGM; 0 does not run it.
	DCGMLevel int `json:"dcgm_level,omitempty"`
	// DCGMTimeoutSeconds bounds the diagnostic; 0 is the agent's default
	// for the level.
	DCGMTimeoutSeconds int `json:"dcgm_timeout_seconds,omitempty"`
	// LLDPSeconds: listen this long on every Ethernet port for the
	// switch's LLDP announcement (switches send every 30 s by default).
	LLDPSeconds int `json:"lldp_seconds,omitempty"`
	// Burnin: stress and verify memory, disks and the network.
	Burnin *BurninTask `json:"burnin,omitempty"`
}

// DCGMDefaultTimeout is how long `dcgmi diag` may run at a level when the
// task names no bound: levels 1 and 2 end well inside the service's
// default wait for an inspection; 3 and 4 (15 minutes to hours on an
// 8-GPU server) get a bound that fits them, and the service waits that
// much longer. Both sides read it here.
func DCGMDefaultTimeout(level int) time.Duration {
	switch {
	case level <= 1:
		return 3 * time.Minute
	case level == 2:
		return 7 * time.Minute
	case level == 3:
		return 45 * time.Minute
	}
	return 150 * time.Minute
}

// LLDPPort is what the agent heard on one Ethernet port while it listened
// for LLDP: the switch and port at the other end of the cable, or nothing
// (Neighbor nil) when no announcement came within the listening time.
type LLDPPort struct {
	Interface  string        `json:"interface"`
	PCIAddress string        `json:"pci_address,omitempty"`
	MAC        string        `json:"mac"`
	Carrier    bool          `json:"carrier"`
	Neighbor   *LLDPNeighbor `json:"neighbor,omitempty"`
	Error      string        `json:"error,omitempty"` // why the port could not be listened on
}

// LLDPNeighbor is one LLDP announcement's identity TLVs.
type LLDPNeighbor struct {
	ChassisID       string `json:"chassis_id"`
	PortID          string `json:"port_id"`
	PortDescription string `json:"port_description,omitempty"`
	SystemName      string `json:"system_name,omitempty"`
}
