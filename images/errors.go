package images

import (
	"errors"
	"fmt"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

// Sentinels for errors.Is. Each typed error below also wraps
// inventory.ErrInvalid or inventory.ErrConflict, so an API that maps
// inventory's sentinels to status codes (ErrInvalid → 400, ErrConflict →
// 409) maps these without knowing this package; one that knows them can
// answer more precisely (413, 429).
var (
	ErrFormat   = imagefmt.ErrFormat
	ErrChecksum = errors.New("checksum mismatch")
	ErrTooLarge = imagefmt.ErrTooLarge
	ErrQuota    = errors.New("image quota exceeded")
	ErrBusy     = errors.New("too many imports")
)

// FormatError is an image that is not what it was declared to be, not a
// valid stream of its format (a truncated or corrupt archive), or not a
// raw disk at all (a qcow2, VHD or VMDK container).
type FormatError struct {
	Declared imagefmt.Format // what the caller said; empty when it said nothing
	Detected imagefmt.Format // what the magic bytes say
	Msg      string
	Err      error // the contract's own error, when there is one
}

func (e *FormatError) Error() string {
	switch {
	case e.Msg != "":
		return e.Msg
	case e.Err != nil:
		return e.Err.Error()
	}
	return fmt.Sprintf("declared format %s, but the content is %s: declare %s, or none and let the content decide", e.Declared, e.Detected, e.Detected)
}

func (e *FormatError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrFormat, inventory.ErrInvalid, e.Err}
	}
	return []error{ErrFormat, inventory.ErrInvalid}
}

// TooLargeError is an image that decompresses past Options.MaxImageSize.
type TooLargeError struct{ imagefmt.TooLargeError }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the image decompresses to more than %d bytes, the service's image size limit", e.Limit)
}

func (e *TooLargeError) Unwrap() []error { return []error{ErrTooLarge, inventory.ErrInvalid} }

// QuotaError is an import that would take a tenant past its image quota.
type QuotaError struct {
	Tenant string
	Quota  int64 // bytes
	Used   int64 // stored bytes of the tenant's images, imports in flight included
	Adding int64 // bytes of this import received so far
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("tenant %q: image quota exceeded: %d bytes stored or importing plus %d of this image is over the %d-byte quota by %d: delete an image first",
		e.Tenant, e.Used, e.Adding, e.Quota, e.Used+e.Adding-e.Quota)
}

func (e *QuotaError) Unwrap() []error { return []error{ErrQuota, inventory.ErrConflict} }

// BusyError is an import refused because Options.MaxImports are running.
type BusyError struct{ Limit int }

func (e *BusyError) Error() string {
	return fmt.Sprintf("%d image imports are running, the most this service runs at once: try again when one has finished", e.Limit)
}

func (e *BusyError) Unwrap() []error { return []error{ErrBusy, inventory.ErrConflict} }

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
