package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
)

// EraseOptions say which disk to erase and how.
type EraseOptions struct {
	Disk wire.Disk // from the inspection: name, model, serial, size
	Path string    // its block device (or a file, in tests)
	Mode wire.WipeMode
	// Samples is how many blocks spread across the disk carry a canary
	// through the erase (default 64, plus the first and last block).
	Samples       int
	Progress      ProgressFunc
	ProgressEvery time.Duration // default 5 s
	Log           *slog.Logger
}

// sanitizeTimeout bounds the wait for one NVMe sanitize to finish.
const sanitizeTimeout = 6 * time.Hour

// sampleSize is the size of a verification sample: one 4 KiB block,
// aligned, so it is whole logical blocks on 512 and 4K disks alike.
const sampleSize = 4096

// methodLevel is the NIST SP 800-88 Rev. 1 level each method reaches
// (Appendix A, NVMe and ATA): the device's own Sanitize, Format with
// Secure Erase and SECURITY ERASE UNIT are purge; overwriting through the block interface only
// clears (it cannot reach spare and remapped blocks).
func methodLevel(m wire.EraseMethod) wire.EraseLevel {
	switch m {
	case wire.EraseNVMeSanitizeCrypto, wire.EraseNVMeSanitizeBlock, wire.EraseNVMeFormatCrypto,
		wire.EraseNVMeFormatUserData, wire.EraseATASecureEnhanced, wire.EraseATASecure:
		return wire.LevelPurge
	case wire.EraseOverwrite:
		return wire.LevelClear
	}
	return wire.LevelNone
}

// planErase lists the methods to try, strongest first, overwrite last.
// NVMe: crypto erase comes first: it is as strong as a block erase and
// takes seconds, not the minutes a block erase may need. Sanitize beats
// Format because it also covers caches and spare blocks and cannot be
// interrupted by a reset (it resumes at power-on). ATA: enhanced secure
// erase also covers reallocated sectors; both only when the Security
// feature set is usable (not frozen, no unknown password).
func planErase(c *nvmeCaps, a *ataCaps) []wire.EraseMethod {
	var p []wire.EraseMethod
	if a != nil && a.ataUsable() == "" {
		if a.Enhanced {
			p = append(p, wire.EraseATASecureEnhanced)
		}
		p = append(p, wire.EraseATASecure)
	}
	if c != nil {
		if c.SanitizeCrypto {
			p = append(p, wire.EraseNVMeSanitizeCrypto)
		}
		if c.SanitizeBlock {
			p = append(p, wire.EraseNVMeSanitizeBlock)
		}
		if c.FormatCrypto {
			p = append(p, wire.EraseNVMeFormatCrypto)
		}
		if c.Format {
			p = append(p, wire.EraseNVMeFormatUserData)
		}
	}
	return append(p, wire.EraseOverwrite)
}

// sampleOffsets spreads n sample blocks evenly over a disk of size bytes,
// the first and the last block included, aligned to sampleSize.
func sampleOffsets(size int64, n int) []int64 {
	blocks := size / sampleSize
	if blocks == 0 {
		return nil
	}
	n = int(min(int64(n), blocks))
	if n < 2 {
		return []int64{0}
	}
	out := make([]int64, 0, n)
	for i := range n {
		b := int64(i) * (blocks - 1) / int64(n-1)
		if len(out) == 0 || out[len(out)-1] != b*sampleSize {
			out = append(out, b*sampleSize)
		}
	}
	return out
}

// canary is the pattern written at off before the erase: unique per
// erase (nonce) and per block (offset), so that neither a stale copy nor
// a neighbour's block can pass for it.
func canary(nonce string, off int64) []byte {
	line := fmt.Sprintf("metalhall erase canary %s @%d\n", nonce, off)
	return bytes.Repeat([]byte(line), sampleSize/len(line)+1)[:sampleSize]
}

// writeCanaries writes a canary to each sample block and reads them back
// from the device, so that the check after the erase means something.
func writeCanaries(f *os.File, nonce string, offs []int64) error {
	for _, off := range offs {
		if _, err := f.WriteAt(canary(nonce, off), off); err != nil {
			return fmt.Errorf("writing canary at %d: %w", off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync after canaries: %w", err)
	}
	dropCache(f)
	buf := make([]byte, sampleSize)
	for _, off := range offs {
		if _, err := f.ReadAt(buf, off); err != nil {
			return fmt.Errorf("reading canary at %d: %w", off, err)
		}
		if !bytes.Equal(buf, canary(nonce, off)) {
			return fmt.Errorf("the canary written at %d does not read back: the disk does not keep what is written", off)
		}
	}
	return nil
}

// checkCanaries reads every sample block back after the erase (from the
// device, not the page cache) and counts what it finds.
func checkCanaries(f *os.File, nonce string, offs []int64) (wire.EraseVerification, error) {
	v := wire.EraseVerification{Samples: len(offs), SampleBytes: sampleSize}
	dropCache(f)
	buf := make([]byte, sampleSize)
	zero := make([]byte, sampleSize)
	for _, off := range offs {
		if _, err := f.ReadAt(buf, off); err != nil {
			return v, fmt.Errorf("reading sample at %d: %w", off, err)
		}
		switch {
		case bytes.Equal(buf, canary(nonce, off)):
			v.Canary++
		case bytes.Equal(buf, zero):
			v.Zero++
		default:
			v.Other++
		}
	}
	v.Summary = fmt.Sprintf("%d samples of %d B: %d still hold the canary, %d zero, %d other data", v.Samples, v.SampleBytes, v.Canary, v.Zero, v.Other)
	return v, nil
}

// Erase sanitizes one disk and returns its record. The error is set when
// the record's result is failed, and says why.
//
// Certified mode: canaries go to sample blocks; the strongest method the
// device offers runs (a method the device refuses is noted in Attempts
// and the next one tried, down to overwrite); then no sample may still
// hold its canary. Fast and full are the older wipes, recorded as what
// they are.
func Erase(ctx context.Context, o EraseOptions) (wire.EraseRecord, error) {
	rec := wire.EraseRecord{Disk: o.Disk.Name, Model: o.Disk.Model, Serial: o.Disk.Serial, SizeBytes: o.Disk.SizeBytes, Started: time.Now().UTC()}
	err := erase(ctx, o, &rec)
	rec.Ended = time.Now().UTC()
	rec.Result = wire.ErasePassed
	if err != nil {
		rec.Result, rec.Error = wire.EraseFailed, err.Error()
	}
	return rec, err
}

func erase(ctx context.Context, o EraseOptions, rec *wire.EraseRecord) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = 5 * time.Second
	}
	if o.Samples == 0 {
		o.Samples = 64
	}
	switch o.Mode {
	case wire.WipeFast:
		res, err := Wipe(ctx, o.Path, wire.WipeFast, o.Progress)
		rec.SizeBytes, rec.Method, rec.Level = res.Size, wire.EraseFast, wire.LevelNone
		rec.Verification = wire.EraseVerification{Summary: fmt.Sprintf("first and last MiB read back as zeros (discard %v); the rest is not sanitized", res.Discarded)}
		return err
	case wire.WipeFull, wire.WipeCertified, "":
	default:
		return fmt.Errorf("erase %s: unknown mode %q (want certified, full or fast)", o.Path, o.Mode)
	}

	f, err := os.OpenFile(o.Path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("erase: %w", err)
	}
	defer f.Close()
	size, err := targetSize(f)
	if err != nil {
		return fmt.Errorf("erase %s: %w", o.Path, err)
	}
	rec.SizeBytes = size

	var nv *nvmeDev
	var caps *nvmeCaps
	var ata *ataCaps
	if o.Mode != wire.WipeFull {
		if nv, caps, err = probeNVMe(f); err != nil {
			// A disk that says it is NVMe but will not identify still
			// gets an overwrite; the record says why.
			rec.Attempts = append(rec.Attempts, "nvme identify: "+err.Error())
			log.Warn("nvme identify failed", "disk", o.Path, "err", err)
		}
		if caps != nil {
			log.Info("nvme identify", "disk", o.Path, "model", caps.Model, "serial", caps.Serial, "format", caps.Format,
				"format_crypto", caps.FormatCrypto, "sanitize_crypto", caps.SanitizeCrypto, "sanitize_block", caps.SanitizeBlock)
			rec.Model, rec.Serial = orElse(caps.Model, rec.Model), orElse(caps.Serial, rec.Serial)
		} else if err == nil {
			if ata, err = probeATA(f); err != nil {
				rec.Attempts = append(rec.Attempts, "ata identify: "+err.Error())
				log.Warn("ata identify failed", "disk", o.Path, "err", err)
			}
			if ata != nil {
				log.Info("ata identify", "disk", o.Path, "model", ata.Model, "serial", ata.Serial, "security", ata.Security,
					"frozen", ata.Frozen, "enhanced", ata.Enhanced)
				rec.Model, rec.Serial = orElse(ata.Model, rec.Model), orElse(ata.Serial, rec.Serial)
				if why := ata.ataUsable(); why != "" {
					rec.Attempts = append(rec.Attempts, "ata secure erase: "+why)
				}
			}
		}
	}
	plan := planErase(caps, ata)
	rec.Supported = plan

	var nb [8]byte
	rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	offs := sampleOffsets(size, o.Samples)
	if err := writeCanaries(f, nonce, offs); err != nil {
		return fmt.Errorf("erase %s: %w", o.Path, err)
	}

	for _, m := range plan {
		if err := ctx.Err(); err != nil {
			return err
		}
		log.Info("erasing", "disk", o.Path, "method", m)
		err := runMethod(ctx, o, f, nv, caps, ata, m, size)
		if err == nil {
			rec.Method, rec.Level = m, methodLevel(m)
			break
		}
		if m == wire.EraseOverwrite || ctx.Err() != nil {
			return fmt.Errorf("erase %s: %s: %w", o.Path, m, err)
		}
		rec.Attempts = append(rec.Attempts, fmt.Sprintf("%s: %v", m, err))
		log.Warn("erase method refused, trying the next", "disk", o.Path, "method", m, "err", err)
	}

	v, err := checkCanaries(f, nonce, offs)
	if rec.Method == wire.EraseOverwrite {
		v.FullReadBack = true // Wipe full read every byte back as zero
		v.Summary += "; every byte read back as zero"
	}
	rec.Verification = v
	if err != nil {
		return fmt.Errorf("erase %s: verify: %w", o.Path, err)
	}
	if v.Canary > 0 {
		return fmt.Errorf("erase %s: verify: %d of %d sample blocks still hold the data written before the %s: the erase did not take", o.Path, v.Canary, v.Samples, rec.Method)
	}
	rereadPartitions(f)
	return nil
}

// probeNVMe identifies f's controller and namespace; it returns nils and
// no error when f is not an NVMe namespace.
func probeNVMe(f *os.File) (*nvmeDev, *nvmeCaps, error) {
	if blk, _ := isBlockDevice(f); !blk {
		return nil, nil, nil
	}
	nv, err := openNVMe(f)
	if errors.Is(err, errNotSupported) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	c, err := nv.identify()
	if err != nil {
		return nil, nil, err
	}
	return nv, &c, nil
}

// probeATA identifies an ATA disk through SG_IO; nil and no error when
// f has no SCSI/ATA interface (virtio, a file).
func probeATA(f *os.File) (*ataCaps, error) {
	if blk, _ := isBlockDevice(f); !blk {
		return nil, nil
	}
	c, err := identifyATA(f)
	if errors.Is(err, errNotSupported) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func runMethod(ctx context.Context, o EraseOptions, f *os.File, nv *nvmeDev, caps *nvmeCaps, ata *ataCaps, m wire.EraseMethod, size int64) error {
	if m == wire.EraseOverwrite {
		_, err := Wipe(ctx, o.Path, wire.WipeFull, o.Progress)
		return err
	}
	// The device works on its own; keep the service told we are alive.
	tick := func(frac float64) {
		if o.Progress != nil {
			o.Progress(wire.Progress{Step: wire.StepWipe, Bytes: int64(frac * float64(size)), Total: size})
		}
	}
	stop := heartbeat(ctx, o.ProgressEvery, func() { tick(0) })
	defer stop()
	if m == wire.EraseATASecureEnhanced || m == wire.EraseATASecure {
		if ata == nil {
			return fmt.Errorf("%w: %s on a disk that is not ATA", errNotSupported, m)
		}
		return ataSecureErase(f, *ata, m == wire.EraseATASecureEnhanced)
	}
	if nv == nil || caps == nil {
		return fmt.Errorf("%w: %s on a disk that is not NVMe", errNotSupported, m)
	}
	// A crypto erase takes seconds and a block erase minutes; a sanitize
	// still running after hours is stuck, and the drive is no use anyway.
	sctx, cancel := context.WithTimeout(ctx, sanitizeTimeout)
	defer cancel()
	switch m {
	case wire.EraseNVMeSanitizeCrypto:
		return nv.sanitize(sctx, sanactCryptoErase, time.Second, tick)
	case wire.EraseNVMeSanitizeBlock:
		return nv.sanitize(sctx, sanactBlockErase, time.Second, tick)
	case wire.EraseNVMeFormatCrypto:
		return nv.format(*caps, sesCrypto)
	case wire.EraseNVMeFormatUserData:
		return nv.format(*caps, sesUserData)
	}
	return fmt.Errorf("%w: method %s", errNotSupported, m)
}

// heartbeat calls fn every interval until stop is called; for commands
// that block for minutes with nothing to report.
func heartbeat(ctx context.Context, every time.Duration, fn func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() { cancel(); <-done }
}

func orElse(a, b string) string {
	if strings.TrimSpace(a) != "" {
		return a
	}
	return b
}

// eraseSummary is the one-line detail of a wipe task's done report.
func eraseSummary(recs []wire.EraseRecord) string {
	var s []string
	for _, r := range recs {
		s = append(s, fmt.Sprintf("%s %s (%s) %s", r.Disk, orElse(string(r.Method), "-"), orElse(string(r.Level), "-"), r.Result))
	}
	return "erased " + strings.Join(s, "; ")
}
