package wire

import "time"

// Certified erase: what the agent did to each disk, in a form an auditor
// can read (NIST SP 800-88 Rev. 1 terms). These types are kept apart from
// the rest of the protocol so the two change independently.

// WipeCertified erases every disk by the strongest method it supports
// (NVMe Sanitize or Format with Secure Erase, ATA Secure Erase, else a
// full overwrite), verifies samples, and reports an EraseRecord per disk.
// It is the default for releases.
const WipeCertified WipeMode = "certified"

// EraseMethod is how a disk was erased.
type EraseMethod string

const (
	EraseNVMeSanitizeCrypto EraseMethod = "nvme-sanitize-crypto"      // Sanitize, crypto erase (SANACT 4)
	EraseNVMeSanitizeBlock  EraseMethod = "nvme-sanitize-block"       // Sanitize, block erase (SANACT 2)
	EraseNVMeFormatCrypto   EraseMethod = "nvme-format-crypto"        // Format NVM, SES 2
	EraseNVMeFormatUserData EraseMethod = "nvme-format-user-data"     // Format NVM, SES 1
	EraseATASecureEnhanced  EraseMethod = "ata-secure-erase-enhanced" // SECURITY ERASE UNIT, enhanced
	EraseATASecure          EraseMethod = "ata-secure-erase"          // SECURITY ERASE UNIT, normal
	EraseOverwrite          EraseMethod = "overwrite"                 // zeros written over every byte and read back
	// EraseFast is the old fast wipe (discard, zeroed edges), reported
	// so that a release that chose it says what it did; a full wipe is
	// reported as EraseOverwrite.
	EraseFast EraseMethod = "fast-wipe"
)

// EraseLevel is the NIST SP 800-88 sanitization level a method reaches.
type EraseLevel string

const (
	LevelPurge EraseLevel = "purge" // infeasible to recover even with lab techniques
	LevelClear EraseLevel = "clear" // protects against simple, non-invasive recovery
	// LevelNone: the disk was wiped but not sanitized in the 800-88 sense
	// (fast wipe: partition tables and signatures only).
	LevelNone EraseLevel = "none"
)

// EraseResult is whether a disk's erase and its verification passed.
type EraseResult string

const (
	ErasePassed EraseResult = "passed"
	EraseFailed EraseResult = "failed"
)

// EraseRecord is the certificate of one disk's erase.
type EraseRecord struct {
	Disk      string      `json:"disk"` // kernel name, e.g. nvme0n1
	Model     string      `json:"model,omitempty"`
	Serial    string      `json:"serial,omitempty"`
	SizeBytes int64       `json:"size_bytes"`
	Method    EraseMethod `json:"method,omitempty"` // what erased the disk (empty when nothing did)
	Level     EraseLevel  `json:"level,omitempty"`
	Result    EraseResult `json:"result"`
	Error     string      `json:"error,omitempty"` // why it failed
	Started   time.Time   `json:"started"`
	Ended     time.Time   `json:"ended"`
	// Supported lists the methods the device offered, strongest first;
	// Attempts says what was tried before Method and why it was not kept
	// (e.g. "nvme-sanitize-crypto: invalid field (0x2)").
	Supported    []EraseMethod     `json:"supported,omitempty"`
	Attempts     []string          `json:"attempts,omitempty"`
	Verification EraseVerification `json:"verification"`
}

// EraseVerification is what reading the disk back after the erase found.
// Before the erase the agent writes a known canary to Samples blocks
// spread across the disk; afterwards none may still hold it.
type EraseVerification struct {
	Samples     int   `json:"samples"`      // blocks checked
	SampleBytes int64 `json:"sample_bytes"` // size of each
	Canary      int   `json:"canary"`       // samples still holding the canary (must be 0)
	Zero        int   `json:"zero"`         // samples that read as zeros
	Other       int   `json:"other"`        // samples with other data (crypto erase: expected)
	// FullReadBack: every byte was read back as zero (overwrite).
	FullReadBack bool   `json:"full_read_back,omitempty"`
	Summary      string `json:"summary"`
}
