package images

import (
	"errors"
	"fmt"

	"github.com/metalhall/metalhall/inventory"
)

// Sentinels for errors.Is. Each typed error below also wraps
// inventory.ErrInvalid, so an API that maps inventory's sentinels to status
// codes (ErrInvalid → 400, ErrExists/ErrConflict → 409, ErrNotFound → 404)
// maps these without knowing this package.
var (
	ErrFormat   = errors.New("bad image format")
	ErrChecksum = errors.New("checksum mismatch")
)

// FormatError is an image that is not what it was declared to be, or not a
// valid stream of its format (a truncated or corrupt archive).
type FormatError struct {
	Declared Format // what the caller said; empty when it said nothing
	Detected Format // what the magic bytes say
	Msg      string
}

func (e *FormatError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("declared format %s, but the content is %s: drop --format or fix it", e.Declared, e.Detected)
}

func (e *FormatError) Unwrap() []error { return []error{ErrFormat, inventory.ErrInvalid} }

// ChecksumError is a stream whose sha256 is not the one the caller
// expected. The caller's value may be that of the stored file or that of
// the uncompressed image; it matched neither.
type ChecksumError struct {
	Expected        string
	Got             string // sha256 of the bytes received
	GotUncompressed string // sha256 after decompression; empty for raw
}

func (e *ChecksumError) Error() string {
	if e.GotUncompressed == "" || e.GotUncompressed == e.Got {
		return fmt.Sprintf("checksum mismatch: expected sha256 %s, got %s: the file is corrupt or the checksum is for another file", e.Expected, e.Got)
	}
	return fmt.Sprintf("checksum mismatch: expected sha256 %s, got %s (uncompressed %s): the file is corrupt or the checksum is for another file", e.Expected, e.Got, e.GotUncompressed)
}

func (e *ChecksumError) Unwrap() []error { return []error{ErrChecksum, inventory.ErrInvalid} }

func invalid(field, format string, args ...any) error {
	return &inventory.ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
