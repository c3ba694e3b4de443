package images

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/metalhall/metalhall/images/imagefmt"
)

// A crafted sparse image with 4 KiB blocks (the smallest the store allows):
//
//	block 0      data at its last byte only
//	block 1      data                      → one extent with block 0
//	blocks 2-4   zero
//	block 5      data in its middle
//	blocks 6-7   zero
//	block 8      data, then a partial block 9 of 100 bytes, zero but for its last byte
//
// The map the store keeps beside a blob, as the agent's task carries it.
func TestImportStoresTheBlockMap(t *testing.T) {
	const bs = 4096
	img := make([]byte, 9*bs+100)
	img[bs-1] = 1
	for i := bs; i < 2*bs; i++ {
		img[i] = byte(i)
	}
	img[5*bs+2000] = 0xff
	img[8*bs] = 3
	img[len(img)-1] = 9
	wantMapped := int64(4*bs + 100)

	// Through the whole import, with the block map as the agent reads it.
	fx := newFixture(t, Options{BlockSize: bs})
	rec, err := fx.s.Import(ctx, bytes.NewReader(compress(t, imagefmt.Zstd, img)), ImportOptions{Name: "sparse"})
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
