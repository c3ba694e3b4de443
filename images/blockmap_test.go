package images

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

// A crafted sparse image with 4 KiB blocks (the smallest the store allows):
//
//	block 0      data at its last byte only
//	block 1      data                      → one extent with block 0
//	blocks 2-4   zero
//	block 5      data in its middle
//	blocks 6-7   zero
//	block 8      data, then a partial block 9 of 100 bytes, zero but for its last byte
func TestZeroMapSparseImage(t *testing.T) {
	const bs = 4096
	img := make([]byte, 9*bs+100)
	img[bs-1] = 1
	for i := bs; i < 2*bs; i++ {
		img[i] = byte(i)
	}
	img[5*bs+2000] = 0xff
	img[8*bs] = 3
	img[len(img)-1] = 9
	want := [][2]int64{{0, 2 * bs}, {5 * bs, bs}, {8 * bs, bs + 100}}
	wantMapped := int64(4*bs + 100)

	// Whatever the pieces the stream arrives in, the map is the same.
	for _, piece := range []int{1, 7, 1000, bs, bs + 1, 3 * bs, len(img)} {
		zm := newZeroMapper(bs)
		for off := 0; off < len(img); off += piece {
			zm.Write(img[off:min(off+piece, len(img))])
		}
		m := zm.finish("x")
		if fmt.Sprint(m.Extents) != fmt.Sprint(want) || m.MappedBytes != wantMapped || m.ImageSize != int64(len(img)) {
			t.Fatalf("pieces of %d: extents %v mapped %d size %d; want %v mapped %d", piece, m.Extents, m.MappedBytes, m.ImageSize, want, wantMapped)
		}
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
	}

	// Through the whole import, with the block map as the agent reads it.
	fx := newFixture(t, Options{BlockSize: bs})
	rec, err := fx.s.Import(ctx, bytes.NewReader(compress(t, FormatZstd, img)), ImportOptions{Name: "sparse"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.MappedBytes != wantMapped || rec.UncompressedSize != int64(len(img)) {
		t.Fatalf("image = %+v", rec)
	}
	m, err := fx.s.BlockMap(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(m)
	wantJSON := fmt.Sprintf(`{"version":1,"block_size":4096,"image_size":36964,"mapped_bytes":16484,"sha256":"%s","extents":[[0,8192],[20480,4096],[32768,4196]]}`, sum(img))
	if string(data) != wantJSON {
		t.Fatalf("block map JSON\n%s\nwant\n%s", data, wantJSON)
	}
}

func TestZeroMapAllZeroAndFull(t *testing.T) {
	zm := newZeroMapper(DefaultBlockSize)
	zm.Write(make([]byte, 3*DefaultBlockSize+5))
	if m := zm.finish(""); len(m.Extents) != 0 || m.MappedBytes != 0 {
		t.Fatalf("all-zero image: %+v", m)
	}
	zm = newZeroMapper(DefaultBlockSize)
	zm.Write(bytes.Repeat([]byte{1}, 3*DefaultBlockSize+5))
	if m := zm.finish(""); fmt.Sprint(m.Extents) != fmt.Sprint([][2]int64{{0, 3*DefaultBlockSize + 5}}) {
		t.Fatalf("full image: %+v", m.Extents)
	}
}

func TestBlockMapValidate(t *testing.T) {
	bad := []BlockMap{
		{Version: 2, BlockSize: 4096},
		{Version: 1, BlockSize: 4096, ImageSize: 100, Extents: [][2]int64{{0, 200}}, MappedBytes: 200},
		{Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: [][2]int64{{0, 4096}, {4096, 10}}, MappedBytes: 4106},
		{Version: 1, BlockSize: 4096, ImageSize: 9000, Extents: [][2]int64{{0, 4096}}, MappedBytes: 1},
	}
	for i, m := range bad {
		if err := m.Validate(); err == nil {
			t.Errorf("map %d passed validation: %+v", i, m)
		}
	}
}
