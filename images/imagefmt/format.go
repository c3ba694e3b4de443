// Package imagefmt is the image contract between the service and the
// in-RAM agent: the format names, format detection, the one decoder both
// sides read images with, the block map and its validator, and the
// zero-block size. The importer accepts exactly what the agent can write,
// because both use this package. It imports no project package, so the
// agent can link it without pulling in the service.
package imagefmt

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Format is how an image's bytes are stored: a raw disk image, or one
// compressed with gzip, zstd or xz. The names are the ones the CLI, the
// catalogue and the agent's task all use.
type Format string

const (
	Raw  Format = "raw"
	Gzip Format = "raw.gz"
	Zstd Format = "raw.zst"
	XZ   Format = "raw.xz"
)

// Formats lists the accepted formats, for help texts and error messages.
var Formats = []Format{Raw, Gzip, Zstd, XZ}

// ErrFormat is wrapped by every error about what an image's bytes are.
var ErrFormat = errors.New("bad image format")

// UnknownFormatError is a format name this contract does not know.
type UnknownFormatError struct{ Name string }

func (e *UnknownFormatError) Error() string {
	return fmt.Sprintf("unknown image format %q: use one of %s", e.Name, List())
}

func (e *UnknownFormatError) Unwrap() error { return ErrFormat }

// Parse reads a format name ("" means "not said": detect it). The short
// names gz, zst and xz are what the agent's task carried before the two
// sides shared this package, and what people type as file extensions; they
// are accepted and mean the same formats.
func Parse(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return "", nil
	case "raw", "img":
		return Raw, nil
	case "raw.gz", "gz", "gzip":
		return Gzip, nil
	case "raw.zst", "zst", "zstd":
		return Zstd, nil
	case "raw.xz", "xz":
		return XZ, nil
	}
	return "", &UnknownFormatError{Name: s}
}

// List is the accepted formats as one comma-separated string.
func List() string {
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}

// HeadSize is how many leading bytes Detect and CheckDisk need to see to
// be sure (fewer are fine for a shorter stream).
const HeadSize = 512

var (
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// Detect names the compression of a stream from its first bytes, and
// refuses a virtual-disk container (qcow2, VHD, VMDK, ...): its bytes are
// not the disk, and written to one they boot nothing. Anything else is a
// raw image: a disk image has no magic of its own (it starts with an MBR,
// a GPT protective MBR, or zeros).
func Detect(head []byte) (Format, error) {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip, nil
	case bytes.HasPrefix(head, magicZstd):
		return Zstd, nil
	case bytes.HasPrefix(head, magicXZ):
		return XZ, nil
	}
	if err := CheckDisk(head); err != nil {
		return "", err
	}
	return Raw, nil
}

// ContainerError is an image whose (uncompressed) bytes are a virtual-disk
// container rather than a raw disk.
type ContainerError struct {
	Found string // e.g. "qcow2"
	// Inside is the compression around it, when the container was found
	// after decompressing; empty for an uncompressed upload.
	Inside Format
}

func (e *ContainerError) Error() string {
	where := "the image"
	if e.Inside != "" && e.Inside != Raw {
		where = fmt.Sprintf("the %s stream", e.Inside)
	}
	return fmt.Sprintf("%s is a %s virtual disk, not a raw disk image: convert it first "+
		"(qemu-img convert -O raw IN OUT.raw), then import OUT.raw or a compressed copy (%s)", where, e.Found, List())
}

func (e *ContainerError) Unwrap() error { return ErrFormat }

// containers are the virtual-disk formats people upload by mistake, by
// the magic each puts at a fixed offset of its first bytes.
var containers = []struct {
	name  string
	off   int
	magic []byte
}{
	{"qcow2", 0, []byte("QFI\xfb")},
	{"QED", 0, []byte("QED\x00")},
	{"VMDK", 0, []byte("KDMV")},
	{"VMDK (descriptor)", 0, []byte("# Disk DescriptorFile")},
	{"VHDX", 0, []byte("vhdxfile")},
	// A dynamic VHD starts with a copy of its footer; a fixed VHD is the
	// raw disk plus a footer at the end, and writes a working disk.
	{"VHD", 0, []byte("conectix")},
	{"VDI", 0x40, []byte{0x7f, 0x10, 0xda, 0xbe}},
}

// CheckDisk refuses head if it is the start of a virtual-disk container.
func CheckDisk(head []byte) error {
	for _, c := range containers {
		if len(head) >= c.off+len(c.magic) && bytes.Equal(head[c.off:c.off+len(c.magic)], c.magic) {
			return &ContainerError{Found: c.name}
		}
	}
	return nil
}
