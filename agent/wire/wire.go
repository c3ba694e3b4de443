// Package wire is the JSON protocol between the in-RAM agent and the
// metalhall service. It is the only code the two share: keep it small,
// dependency-free and backwards compatible (add fields, never rename).
//
// All endpoints live under {url}/agent/v1/ and take the job-scoped token
// from the kernel command line as "Authorization: Bearer <token>":
//
//	GET  task        -> Task
//	POST inspection  <- Inventory
//	POST progress    <- Progress
//	POST done        <- Done
//
// The service answers POSTs with 204 (or 200 and any body, which the agent
// ignores). Errors are non-2xx with an Error body; 401/403 tell the agent
// its token is no good and it stops retrying.
package wire

import "time"

// PathPrefix is where the agent endpoints live, relative to metalhall.url.
const PathPrefix = "/agent/v1/"

// Endpoint names, appended to PathPrefix.
const (
	EndpointTask       = "task"
	EndpointInspection = "inspection"
	EndpointProgress   = "progress"
	EndpointDone       = "done"
)

// Kernel command-line parameters the agent reads from /proc/cmdline.
const (
	ParamURL   = "metalhall.url"   // base URL of the service, e.g. http://10.0.0.1:8080
	ParamToken = "metalhall.token" // job-scoped bearer token
	ParamMAC   = "metalhall.mac"   // optional: the NIC to use (the one that PXE-booted)
	// ParamTimeout (optional, seconds) bounds the wait for the network and
	// for the service to hand out a task; defaults 180 s and 600 s.
	ParamTimeout = "metalhall.timeout"
)

// TaskKind says what the agent is asked to do.
type TaskKind string

const (
	KindInspect   TaskKind = "inspect"   // report the Inventory, nothing else
	KindProvision TaskKind = "provision" // inspect, then write Image to TargetDisk
	KindWipe      TaskKind = "wipe"      // inspect, then wipe every disk (WipeMode)
)

// WipeMode says how thoroughly disks are wiped.
type WipeMode string

const (
	// WipeFast discards the whole device where supported and zeroes the
	// first and last MiB (partition tables, filesystem and RAID superblocks).
	WipeFast WipeMode = "fast"
	// WipeFull writes zeros over every byte and reads them back.
	WipeFull WipeMode = "full"
)

// After says what the agent does once the task is done (or failed).
type After string

const (
	AfterPoweroff After = "poweroff"
	AfterReboot   After = "reboot"
	AfterNone     After = "none" // stay up (debugging); the agent idles
)

// Task is the answer to GET task.
type Task struct {
	JobID string   `json:"job_id"`
	Kind  TaskKind `json:"kind"`
	// Image is set for KindProvision.
	Image *ImageSpec `json:"image,omitempty"`
	// TargetDisk names the disk to write (e.g. "nvme0n1" or "/dev/nvme0n1").
	// Empty: the largest non-removable disk.
	TargetDisk string   `json:"target_disk,omitempty"`
	WipeMode   WipeMode `json:"wipe_mode,omitempty"` // for KindWipe; default fast
	After      After    `json:"after,omitempty"`     // default poweroff
	// Acceptance is set for commissioning with an acceptance suite.
	Acceptance *AcceptanceTask `json:"acceptance,omitempty"`
}

// ImageSpec describes the image stream to write.
type ImageSpec struct {
	URL    string `json:"url"`    // absolute, or relative to metalhall.url; must serve Range requests
	Format string `json:"format"` // compression of the stream at URL, as images/imagefmt names it: raw, raw.gz, raw.zst, raw.xz
	Size   int64  `json:"size"`   // bytes at URL (compressed); 0 if unknown
	// SHA256 is the hex sha256 of the UNCOMPRESSED image, i.e. of the
	// bytes that end up on disk. The agent verifies it by reading back.
	SHA256           string `json:"sha256"`
	UncompressedSize int64  `json:"uncompressed_size"`
	// BlockMap lists the regions of the uncompressed image that hold data,
	// in ascending order and not overlapping. Bytes outside them are zero
	// and the agent may skip them (zeroing them on disk by cheaper means).
	// Empty: the agent detects zero blocks itself.
	BlockMap []Range `json:"block_map,omitempty"`
}

// Range is a byte range [Offset, Offset+Length) of the uncompressed image.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Step names used in Progress and Done.
const (
	StepBoot    = "boot"
	StepNetwork = "network"
	StepTask    = "task"
	StepInspect = "inspect"
	StepWrite   = "write"
	StepVerify  = "verify"
	StepWipe    = "wipe"
)

// Progress is POSTed every few seconds during long steps.
type Progress struct {
	JobID string `json:"job_id"`
	Step  string `json:"step"`
	Bytes int64  `json:"bytes"`          // done so far
	Total int64  `json:"total"`          // 0 if unknown
	Rate  int64  `json:"rate,omitempty"` // bytes per second, recent average
}

// Done is POSTed once, at the end, whether the task succeeded or not.
type Done struct {
	JobID  string `json:"job_id"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`  // what went wrong, for the operator
	Step   string `json:"step,omitempty"`   // the step that failed (or the last one)
	Detail string `json:"detail,omitempty"` // e.g. "wrote 12.3 GiB to nvme0n1, sha256 ok"
	// Erase has one record per disk for KindWipe (see erase.go).
	Erase []EraseRecord `json:"erase,omitempty"`
}

// Error is the body of a non-2xx answer from the service.
type Error struct {
	Error string `json:"error"`
}

// Inventory is what the agent found on the machine (POST inspection).
type Inventory struct {
	JobID       string      `json:"job_id,omitempty"`
	Collected   time.Time   `json:"collected,omitzero"`
	System      System      `json:"system"`
	CPU         CPU         `json:"cpu"`
	MemoryBytes int64       `json:"memory_bytes"`
	Disks       []Disk      `json:"disks"`
	NICs        []NIC       `json:"nics"`
	PCI         []PCIDevice `json:"pci"`
	GPUs        []GPUGroup  `json:"gpus"`
	// Hardware holds the facts acceptance checks judge (accept.go);
	// absent from agents older than acceptance.
	Hardware *Hardware `json:"hardware,omitempty"`
}

// System is the DMI identity of the machine.
type System struct {
	Vendor      string `json:"vendor,omitempty"`
	Product     string `json:"product,omitempty"`
	Serial      string `json:"serial,omitempty"`
	UUID        string `json:"uuid,omitempty"`
	BoardVendor string `json:"board_vendor,omitempty"`
	BoardName   string `json:"board_name,omitempty"`
	BIOSVendor  string `json:"bios_vendor,omitempty"`
	BIOSVersion string `json:"bios_version,omitempty"`
	BIOSDate    string `json:"bios_date,omitempty"`
}

// CPU summarises /proc/cpuinfo.
type CPU struct {
	Model   string `json:"model"`
	Sockets int    `json:"sockets"`
	Cores   int    `json:"cores"`   // physical cores, all sockets
	Threads int    `json:"threads"` // logical CPUs
}

// Disk is a block device that could be a target.
type Disk struct {
	Name       string `json:"name"` // kernel name, e.g. nvme0n1
	SizeBytes  int64  `json:"size_bytes"`
	Model      string `json:"model,omitempty"`
	Serial     string `json:"serial,omitempty"`
	Rotational bool   `json:"rotational"`
	Removable  bool   `json:"removable"`
	NVMe       bool   `json:"nvme"`
	PCIAddress string `json:"pci_address,omitempty"`
}

// NIC is a network interface with a hardware address.
type NIC struct {
	Name       string `json:"name"`
	MAC        string `json:"mac"`
	Driver     string `json:"driver,omitempty"`
	SpeedMbps  int    `json:"speed_mbps,omitempty"` // 0 when unknown or link down
	Carrier    bool   `json:"carrier"`
	PCIAddress string `json:"pci_address,omitempty"`
}

// PCIDevice is one function on the PCI bus.
type PCIDevice struct {
	Address     string `json:"address"`   // 0000:18:00.0
	VendorID    string `json:"vendor_id"` // 10de
	DeviceID    string `json:"device_id"` // 2330
	Class       string `json:"class"`     // 030200
	SubVendorID string `json:"subsystem_vendor_id,omitempty"`
	SubDeviceID string `json:"subsystem_device_id,omitempty"`
	NUMANode    int    `json:"numa_node"` // -1 when unknown
	Driver      string `json:"driver,omitempty"`
	Vendor      string `json:"vendor,omitempty"` // from the agent's small table
	Name        string `json:"name,omitempty"`   // from the agent's small table
}

// GPUGroup summarises identical accelerators.
type GPUGroup struct {
	Model     string   `json:"model"`
	Count     int      `json:"count"`
	Addresses []string `json:"addresses"`
}
