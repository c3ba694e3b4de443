package imagefmt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// BlockSize is the zero-map granularity, and the agent's when it has no
// map. 64 KiB finds the holes of a typical freshly built image (unused
// filesystem space, partition gaps) while a 2 TiB image still has at most
// 32 Mi blocks.
const BlockSize = 64 << 10

// MaxExtents bounds a block map. The map travels inside every agent task:
// a crafted image of alternating data and zero blocks would otherwise give
// tens of thousands of extents. A map builder that would exceed it merges
// the extents separated by the smallest gaps (writing some zeros instead of
// skipping them, which is always correct).
const MaxExtents = 2048

// BlockMapVersion is bumped when the JSON changes incompatibly.
const BlockMapVersion = 1

// Extent is a byte range [Offset, Offset+Length) of the uncompressed image
// that holds data. In JSON it is the pair [offset, length].
type Extent struct {
	Offset, Length int64
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

func (e Extent) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]int64{e.Offset, e.Length})
}

func (e *Extent) UnmarshalJSON(b []byte) error {
	var p [2]int64
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	e.Offset, e.Length = p[0], p[1]
	return nil
}

// BlockMap says which parts of an uncompressed image hold data. Like
// bmaptool's map it lets the agent skip writing all-zero blocks (after it
// has made sure the disk reads zeros there, e.g. with a discard). The
// service stores it as JSON next to the blob; the agent's task carries its
// extents.
type BlockMap struct {
	Version     int    `json:"version"`
	BlockSize   int64  `json:"block_size"`
	ImageSize   int64  `json:"image_size"`   // uncompressed bytes
	MappedBytes int64  `json:"mapped_bytes"` // bytes inside Extents
	SHA256      string `json:"sha256"`       // of the uncompressed image
	// Extents are in order and do not overlap; bytes outside them are
	// zero.
	Extents []Extent `json:"extents"`
}

// ErrBlockMap is wrapped by every block-map validation error.
var ErrBlockMap = errors.New("bad block map")

// Validate checks a whole map read back from disk or the network.
func (m *BlockMap) Validate() error {
	if m.Version != BlockMapVersion {
		return fmt.Errorf("block map version %d, this metalhall reads %d: %w", m.Version, BlockMapVersion, ErrBlockMap)
	}
	if m.BlockSize <= 0 || m.ImageSize < 0 {
		return fmt.Errorf("block map: block size %d or image size %d: %w", m.BlockSize, m.ImageSize, ErrBlockMap)
	}
	mapped, err := ValidateExtents(m.Extents, m.ImageSize)
	if err != nil {
		return err
	}
	if mapped != m.MappedBytes {
		return fmt.Errorf("block map: extents cover %d bytes, header says %d: %w", mapped, m.MappedBytes, ErrBlockMap)
	}
	return nil
}

// ValidateExtents is the one rule for extents, whoever sent them: at most
// MaxExtents, each non-empty, in order, not overlapping, inside an image of
// size bytes. It returns the bytes they cover.
func ValidateExtents(ext []Extent, size int64) (mapped int64, err error) {
	if len(ext) > MaxExtents {
		return 0, fmt.Errorf("block map: %d extents, at most %d are accepted: %w", len(ext), MaxExtents, ErrBlockMap)
	}
	var end int64
	for i, e := range ext {
		// e.Length > size-e.Offset rather than e.End() > size: a crafted
		// extent must not overflow its way inside.
		if e.Offset < end || e.Length <= 0 || e.Offset > size || e.Length > size-e.Offset {
			return 0, fmt.Errorf("block map: extent %d [%d, +%d) is empty, out of order, overlapping the previous one or outside the %d-byte image: %w",
				i, e.Offset, e.Length, size, ErrBlockMap)
		}
		end = e.End()
		mapped += e.Length
	}
	return mapped, nil
}

// Coarsen merges extents until at most max remain, closing the smallest
// gaps first (in rounds of doubling gap size, so the result does not depend
// on the order extents came in). The bytes in a closed gap are zeros that
// will be written rather than skipped.
func (m *BlockMap) Coarsen(max int) {
	gap := m.BlockSize
	if gap <= 0 {
		gap = BlockSize
	}
	for len(m.Extents) > max {
		m.Extents = mergeGaps(m.Extents, gap)
		gap *= 2
	}
	m.MappedBytes = 0
	for _, e := range m.Extents {
		m.MappedBytes += e.Length
	}
}

// mergeGaps joins neighbours at most gap bytes apart, in place.
func mergeGaps(ext []Extent, gap int64) []Extent {
	if len(ext) == 0 {
		return ext
	}
	out := ext[:1]
	for _, e := range ext[1:] {
		last := &out[len(out)-1]
		if e.Offset-last.End() <= gap {
			last.Length = e.End() - last.Offset
			continue
		}
		out = append(out, e)
	}
	return out
}

// Mapper builds a BlockMap from a stream written to it in pieces of any
// size. A block is mapped when any of its bytes is not zero. It keeps the
// map within MaxExtents as it goes, so its memory is bounded too.
type Mapper struct {
	bs      int64
	pos     int64 // bytes seen
	nonZero bool  // the current (partial) block has data
	gap     int64 // neighbours this close are merged; grows when the map is full
	m       BlockMap
}

// NewMapper starts a map of blockSize granularity (BlockSize if 0).
func NewMapper(blockSize int64) *Mapper {
	if blockSize <= 0 {
		blockSize = BlockSize
	}
	return &Mapper{bs: blockSize, m: BlockMap{Version: BlockMapVersion, BlockSize: blockSize, Extents: []Extent{}}}
}

// Write never fails.
func (z *Mapper) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := z.bs - z.pos%z.bs
		seg := p
		if int64(len(seg)) > room {
			seg = seg[:room]
		}
		if !z.nonZero && !IsZero(seg) {
			z.nonZero = true
		}
		z.pos += int64(len(seg))
		p = p[len(seg):]
		if z.pos%z.bs == 0 {
			z.endBlock()
		}
	}
	return n, nil
}

// endBlock closes the block that ends at z.pos.
func (z *Mapper) endBlock() {
	if !z.nonZero {
		return
	}
	z.nonZero = false
	start := (z.pos - 1) / z.bs * z.bs
	if k := len(z.m.Extents); k > 0 && start-z.m.Extents[k-1].End() <= z.gap {
		z.m.Extents[k-1].Length = z.pos - z.m.Extents[k-1].Offset
		return
	}
	z.m.Extents = append(z.m.Extents, Extent{start, z.pos - start})
	if len(z.m.Extents) > MaxExtents {
		if z.gap == 0 {
			z.gap = z.bs
		}
		for len(z.m.Extents) > MaxExtents {
			z.m.Extents = mergeGaps(z.m.Extents, z.gap)
			if len(z.m.Extents) > MaxExtents {
				z.gap *= 2
			}
		}
	}
}

// Finish closes a trailing partial block and returns the map of the
// image, whose sha256 the caller computed.
func (z *Mapper) Finish(sha string) *BlockMap {
	if z.pos%z.bs != 0 {
		z.endBlock()
	}
	z.m.ImageSize = z.pos
	z.m.SHA256 = sha
	z.m.MappedBytes = 0
	for _, e := range z.m.Extents {
		z.m.MappedBytes += e.Length
	}
	return &z.m
}

// zeros is compared against rather than looping over bytes: bytes.Equal is
// vectorised, and a data block fails on its first word.
var zeros [BlockSize]byte

// IsZero says whether every byte of b is zero.
func IsZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
