//go:build ignore

// gen-binary writes the binary parts of a fixture tree: the SMBIOS table
// (sys/firmware/dmi/tables/DMI) of a 2-socket server with 16 DDR5 DIMMs of
// 128 GB, and a healthy SMART log page (dev/nvmeXn1) for each NVMe disk.
// Run by gen-fixtures.sh: go run testdata/gen-binary.go testdata/hgx-h100
package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	root := os.Args[1]
	var t []byte
	handle := uint16(0x40)
	for s := 1; s <= 2; s++ {
		for c, ch := range "ABCDEFGH" {
			f := make([]byte, 0x28)
			f[0], f[1] = 17, 0x28
			binary.LittleEndian.PutUint16(f[2:], handle)
			binary.LittleEndian.PutUint16(f[8:], 80)  // total width (ECC)
			binary.LittleEndian.PutUint16(f[10:], 64) // data width
			binary.LittleEndian.PutUint16(f[0x0C:], 0x7FFF)
			f[0x0E] = 0x09 // DIMM
			f[0x10], f[0x11] = 1, 2
			f[0x12] = 0x22 // DDR5
			binary.LittleEndian.PutUint16(f[0x15:], 4800)
			f[0x17], f[0x18], f[0x19], f[0x1A] = 3, 4, 5, 6
			binary.LittleEndian.PutUint32(f[0x1C:], 131072)
			binary.LittleEndian.PutUint16(f[0x20:], 4800)
			strs := []string{
				"P" + string(rune('0'+s)) + "-DIMM" + string(ch) + "1",
				"P" + string(rune('0'+s-1)) + "_Node" + string(rune('0'+s-1)) + "_Channel" + string(rune('0'+c)) + "_Dimm0",
				"Samsung", "8012" + strings.Repeat("0", 3) + string(rune('A'+c)) + string(rune('0'+s)), "P" + string(rune('0'+s)) + "-DIMM" + string(ch) + "1_AssetTag",
				"M321RAGA0B20-CWMKH",
			}
			t = append(t, f...)
			t = append(t, strings.Join(strs, "\x00")...)
			t = append(t, 0, 0)
			handle++
		}
	}
	t = append(t, 127, 4, 0xFF, 0xFE, 0, 0)
	dmi := filepath.Join(root, "sys/firmware/dmi/tables")
	must(os.MkdirAll(dmi, 0o755))
	must(os.WriteFile(filepath.Join(dmi, "DMI"), t, 0o644))

	dev := filepath.Join(root, "dev")
	must(os.MkdirAll(dev, 0o755))
	for i := 0; i < 10; i++ {
		p := make([]byte, 512)
		binary.LittleEndian.PutUint16(p[1:], 308) // 35 °C
		p[3], p[4], p[5] = 100, 10, byte(1+i%3)
		binary.LittleEndian.PutUint64(p[128:], 1200+uint64(i))
		must(os.WriteFile(filepath.Join(dev, "nvme"+string(rune('0'+i))+"n1"), p, 0o644))
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
