package imagefmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

// A crafted sparse image with 4 KiB blocks:
//
//	block 0      data at its last byte only
//	block 1      data                      → one extent with block 0
//	blocks 2-4   zero
//	block 5      data in its middle
//	blocks 6-7   zero
//	block 8      data, then a partial block 9 of 100 bytes, zero but for its last byte
func sparseImage() (img []byte, want []Extent, mapped int64) {
	const bs = 4096
	img = make([]byte, 9*bs+100)
	img[bs-1] = 1
	for i := bs; i < 2*bs; i++ {
		img[i] = byte(i)
	}
	img[5*bs+2000] = 0xff
	img[8*bs] = 3
	img[len(img)-1] = 9
	return img, []Extent{{0, 2 * bs}, {5 * bs, bs}, {8 * bs, bs + 100}}, 4*bs + 100
}

func TestMapperGivesTheSameMapWhateverThePieces(t *testing.T) {
	img, want, wantMapped := sparseImage()
	for _, piece := range []int{1, 7, 1000, 4096, 4097, 3 * 4096, len(img)} {
		zm := NewMapper(4096)
		for off := 0; off < len(img); off += piece {
			zm.Write(img[off:min(off+piece, len(img))])
		}
		m := zm.Finish("x")
		if fmt.Sprint(m.Extents) != fmt.Sprint(want) || m.MappedBytes != wantMapped || m.ImageSize != int64(len(img)) {
			t.Fatalf("pieces of %d: extents %v mapped %d size %d; want %v mapped %d", piece, m.Extents, m.MappedBytes, m.ImageSize, want, wantMapped)
		}
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMapperAllZeroAndFull(t *testing.T) {
	zm := NewMapper(0)
	zm.Write(make([]byte, 3*BlockSize+5))
	if m := zm.Finish(""); len(m.Extents) != 0 || m.MappedBytes != 0 {
		t.Fatalf("all-zero image: %+v", m)
	}
	zm = NewMapper(0)
	zm.Write(bytes.Repeat([]byte{1}, 3*BlockSize+5))
	if m := zm.Finish(""); fmt.Sprint(m.Extents) != fmt.Sprint([]Extent{{0, 3*BlockSize + 5}}) {
		t.Fatalf("full image: %+v", m.Extents)
	}
}

// The crafted image of the security review: data and zero blocks
// alternating, 32,768 extents at full resolution. The map stays within
// MaxExtents, still covers every data byte, and still skips the large hole
// that follows.
func TestMapperKeepsAlternatingBlocksWithinMaxExtents(t *testing.T) {
	const bs = 4096
	const blocks = 2 * 32768
	const hole = 1000 // zero blocks after the pattern, then one data block
	zm := NewMapper(bs)
	data := bytes.Repeat([]byte{0xa5}, bs)
	zero := make([]byte, bs)
	for i := range blocks {
		if i%2 == 0 {
			zm.Write(data)
		} else {
			zm.Write(zero)
		}
	}
	for range hole {
		zm.Write(zero)
	}
	zm.Write(data)
	m := zm.Finish("x")
	if len(m.Extents) > MaxExtents {
		t.Fatalf("%d extents, at most %d wanted", len(m.Extents), MaxExtents)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < blocks; i += 2 {
		if off := int64(i) * bs; !covered(m.Extents, off, bs) {
			t.Fatalf("data block at %d is outside the map", off)
		}
	}
	if !covered(m.Extents, (blocks+hole)*bs, bs) {
		t.Fatal("the last data block is outside the map")
	}
	if m.MappedBytes > m.ImageSize-hole*bs {
		t.Fatalf("the hole is no longer skipped: %d of %d bytes mapped", m.MappedBytes, m.ImageSize)
	}
}

func covered(ext []Extent, off, n int64) bool {
	for _, e := range ext {
		if off >= e.Offset && off+n <= e.End() {
			return true
		}
	}
	return false
}

func TestCoarsenMergesAStoredMapPastTheCap(t *testing.T) {
	m := BlockMap{Version: BlockMapVersion, BlockSize: 4096, ImageSize: 3 * 4096 * (MaxExtents + 10)}
	for i := range MaxExtents + 10 {
		m.Extents = append(m.Extents, Extent{int64(i) * 3 * 4096, 4096})
		m.MappedBytes += 4096
	}
	if err := m.Validate(); err == nil {
		t.Fatal("a map past MaxExtents passed validation")
	}
	m.Coarsen(MaxExtents)
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRefusesBadMaps(t *testing.T) {
	bad := map[string]BlockMap{
		"newer version":       {Version: 2, BlockSize: 4096},
		"past the end":        {Version: 1, BlockSize: 4096, ImageSize: 100, Extents: []Extent{{0, 200}}, MappedBytes: 200},
		"overlapping":         {Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: []Extent{{0, 4096}, {4000, 10}}, MappedBytes: 4106},
		"out of order":        {Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: []Extent{{4096, 10}, {0, 4096}}, MappedBytes: 4106},
		"empty extent":        {Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: []Extent{{0, 0}}},
		"wrong mapped bytes":  {Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: []Extent{{0, 4096}}, MappedBytes: 1},
		"overflowing extent":  {Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: []Extent{{8000, 1<<63 - 1}}, MappedBytes: 1<<63 - 1},
		"negative image size": {Version: 1, BlockSize: 4096, ImageSize: -1},
	}
	for name, m := range bad {
		if err := m.Validate(); err == nil {
			t.Errorf("%s: passed validation: %+v", name, m)
		}
	}
	// Touching extents are not what the mapper writes, but they describe
	// the data correctly: accepted.
	ok := BlockMap{Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: []Extent{{0, 4096}, {4096, 10}}, MappedBytes: 4106}
	if err := ok.Validate(); err != nil {
		t.Error(err)
	}
}

func TestExtentJSONIsAPair(t *testing.T) {
	b, err := json.Marshal([]Extent{{1, 2}})
	if err != nil || string(b) != "[[1,2]]" {
		t.Fatalf("%s %v", b, err)
	}
	var back []Extent
	if err := json.Unmarshal([]byte("[[3,4]]"), &back); err != nil || back[0] != (Extent{3, 4}) {
		t.Fatalf("%v %v", back, err)
	}
}
