package images

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// DefaultBlockSize is the zero-map granularity. 64 KiB finds the holes of a
// typical freshly built image (unused filesystem space, partition gaps)
// while a 2 TiB image still has at most 32 Mi blocks.
const DefaultBlockSize = 64 << 10

// BlockMap says which parts of an uncompressed image hold data. Like
// bmaptool's map it lets the agent skip writing all-zero blocks (after it
// has made sure the disk reads zeros there, e.g. with a discard). It is
// stored as JSON next to the blob and served to the agent.
type BlockMap struct {
	Version     int    `json:"version"`
	BlockSize   int64  `json:"block_size"`
	ImageSize   int64  `json:"image_size"`   // uncompressed bytes
	MappedBytes int64  `json:"mapped_bytes"` // bytes inside Extents
	SHA256      string `json:"sha256"`       // of the uncompressed image
	// Extents are [offset, length] byte ranges of the uncompressed image,
	// in order, not touching each other, block-aligned except where the
	// last one ends at ImageSize. Bytes outside them are zero.
	Extents [][2]int64 `json:"extents"`
}

// blockMapVersion is bumped when the JSON changes incompatibly.
const blockMapVersion = 1

// zeroMapper builds a BlockMap from a stream written to it in pieces of any
// size. A block is mapped when any of its bytes is not zero.
type zeroMapper struct {
	bs      int64
	pos     int64 // bytes seen
	nonZero bool  // the current (partial) block has data
	m       BlockMap
}

func newZeroMapper(blockSize int64) *zeroMapper {
	return &zeroMapper{bs: blockSize, m: BlockMap{Version: blockMapVersion, BlockSize: blockSize, Extents: [][2]int64{}}}
}

func (z *zeroMapper) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := z.bs - z.pos%z.bs
		seg := p
		if int64(len(seg)) > room {
			seg = seg[:room]
		}
		if !z.nonZero && !isZero(seg) {
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
func (z *zeroMapper) endBlock() {
	if z.nonZero {
		start := (z.pos - 1) / z.bs * z.bs
		if k := len(z.m.Extents); k > 0 && z.m.Extents[k-1][0]+z.m.Extents[k-1][1] == start {
			z.m.Extents[k-1][1] += z.pos - start
		} else {
			z.m.Extents = append(z.m.Extents, [2]int64{start, z.pos - start})
		}
		z.m.MappedBytes += z.pos - start
	}
	z.nonZero = false
}

// finish closes a trailing partial block and returns the map.
func (z *zeroMapper) finish(sha string) *BlockMap {
	if z.pos%z.bs != 0 {
		z.endBlock()
	}
	z.m.ImageSize = z.pos
	z.m.SHA256 = sha
	return &z.m
}

// zeros is compared against rather than looping over bytes: bytes.Equal is
// vectorised, and a data block fails on its first word.
var zeros [DefaultBlockSize]byte

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// Validate checks a map read back from disk or the network.
func (m *BlockMap) Validate() error {
	if m.Version != blockMapVersion {
		return fmt.Errorf("block map version %d, this metalhall reads %d", m.Version, blockMapVersion)
	}
	if m.BlockSize <= 0 || m.ImageSize < 0 {
		return fmt.Errorf("block map: bad block size %d or image size %d", m.BlockSize, m.ImageSize)
	}
	var end, mapped int64
	for i, e := range m.Extents {
		if e[0] < end || e[1] <= 0 || e[0]+e[1] > m.ImageSize || (i > 0 && e[0] == end) {
			return fmt.Errorf("block map: extent %d [%d, +%d] is out of order, empty, touching the previous one or past the end", i, e[0], e[1])
		}
		end = e[0] + e[1]
		mapped += e[1]
	}
	if mapped != m.MappedBytes {
		return fmt.Errorf("block map: extents cover %d bytes, header says %d", mapped, m.MappedBytes)
	}
	return nil
}

func (m *BlockMap) marshal() ([]byte, error) { return json.Marshal(m) }
