package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/provisioner"
)

// httpError is an error with the status and code it is answered with.
type httpError struct {
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, args...)}
}

func forbidden(msg string) error { return &httpError{http.StatusForbidden, "forbidden", msg} }

func notFound(kind, name string) error {
	return &httpError{http.StatusNotFound, "not_found", fmt.Sprintf("%s %q not found", kind, name)}
}

// classify turns an error into its status, code and the message the client
// sees. Store refusals keep their message: it says what was wrong. Anything
// unexpected is an internal error whose detail stays in the server log.
func classify(err error) (int, string, string) {
	var he *httpError
	var (
		ve  *inventory.ValidationError
		te  *inventory.TransitionError
		pe  *inventory.PlacementError
		mb  *http.MaxBytesError
		se  *json.SyntaxError
		ue  *json.UnmarshalTypeError
		be  *inventory.BusyError
		ure *images.URLRefusedError

		held *inventory.HeldError
		pfe  *provisioner.ProfileError
		pnf  *provisioner.ProfileNotFoundError
	)
	switch {
	case errors.As(err, &he):
		return he.status, he.code, he.msg
	// Lower layers say what is wrong; the hint naming a command or a
	// setting is added here, where commands are known.
	case errors.Is(err, images.ErrBusy):
		return http.StatusTooManyRequests, "busy", err.Error()
	case errors.Is(err, images.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large", err.Error() + " (metalhall serve --image-max-size-gib)"
	case errors.Is(err, images.ErrQuota):
		return http.StatusRequestEntityTooLarge, "quota_exceeded", err.Error() + " (metalhall image delete NAME)"
	case errors.As(err, &ure) && !ure.Self:
		return http.StatusBadRequest, "invalid", err.Error() + " (metalhall serve --image-url-allow CIDR|HOST)"
	case errors.As(err, &pfe):
		return http.StatusBadRequest, "invalid", err.Error()
	case errors.As(err, &pnf):
		return http.StatusNotFound, "not_found", err.Error() + " (metalhall profile list)"
	case errors.As(err, &be):
		return http.StatusConflict, "conflict", fmt.Sprintf("%v (metalhall machine cancel %s)", err, be.Machine)
	case errors.As(err, &held):
		return http.StatusConflict, "held", err.Error() + " (metalhall job resume)"
	case errors.As(err, &mb):
		return http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", mb.Limit)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, "bad_request", "malformed JSON: the body ends in the middle of a value"
	case errors.As(err, &se):
		return http.StatusBadRequest, "bad_request", fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &ue):
		return http.StatusBadRequest, "bad_request", fmt.Sprintf("field %q must be %s, not %s", ue.Field, ue.Type, ue.Value)
	case errors.As(err, &ve):
		return http.StatusBadRequest, "invalid", err.Error()
	case errors.As(err, &te):
		return http.StatusConflict, "transition_refused", err.Error()
	case errors.As(err, &pe):
		return http.StatusConflict, "placement_refused", err.Error()
	case errors.Is(err, inventory.ErrNotFound):
		return http.StatusNotFound, "not_found", err.Error()
	case errors.Is(err, inventory.ErrExists):
		return http.StatusConflict, "exists", err.Error()
	case errors.Is(err, inventory.ErrConflict):
		return http.StatusConflict, "conflict", err.Error()
	case errors.Is(err, inventory.ErrInvalid):
		return http.StatusBadRequest, "invalid", err.Error()
	// The store's engine could not commit (an etcd cluster without
	// quorum, or unreachable). The client learns what it can do; where
	// the cluster is stays in the service log.
	case errors.Is(err, kv.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable", "the inventory store cannot commit writes now (its etcd cluster has no quorum or cannot be reached): the change was not committed; reads still answer; try again once the cluster is back"
	case errors.Is(err, kv.ErrConflict):
		return http.StatusServiceUnavailable, "unavailable", "the change lost to concurrent writes more times than it is retried: it was not committed; try again"
	}
	return http.StatusInternalServerError, "internal", "internal error: see the service log"
}
