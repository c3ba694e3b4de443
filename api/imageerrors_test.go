package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

// The image store's refusals reach clients with their own status, and the
// hint naming the command or setting is added here, not below.
func TestImageRefusalsGetTheirStatusAndAHint(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("image %q: %w", "x", err) }
	cases := []struct {
		err    error
		status int
		code   string
		hint   string
	}{
		{wrap(&images.TooLargeError{TooLargeError: imagefmt.TooLargeError{Limit: 1 << 30}}), http.StatusRequestEntityTooLarge, "too_large", "--image-max-size-gib"},
		{wrap(&images.QuotaError{Tenant: "ta", Quota: 10, Used: 8, Adding: 4}), http.StatusRequestEntityTooLarge, "quota_exceeded", "image delete"},
		{wrap(&images.BusyError{Limit: 4}), http.StatusTooManyRequests, "busy", ""},
		{wrap(&images.URLRefusedError{Host: "127.0.0.1", Why: "not on the allow-list"}), http.StatusBadRequest, "invalid", "--image-url-allow"},
		{wrap(&images.FormatError{Err: &imagefmt.ContainerError{Found: "qcow2"}}), http.StatusBadRequest, "invalid", "qemu-img convert"},
		{&inventory.BusyError{Machine: "ma", Job: &inventory.Job{ID: "j1", Kind: inventory.JobPower}}, http.StatusConflict, "conflict", "machine cancel ma"},
	}
	for _, c := range cases {
		status, code, msg := classify(c.err)
		if status != c.status || code != c.code || !strings.Contains(msg, c.hint) {
			t.Errorf("%v: %d %s %q; want %d %s with %q", c.err, status, code, msg, c.status, c.code, c.hint)
		}
	}
}
