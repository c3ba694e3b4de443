package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	gofishcommon "github.com/stmcginnis/gofish/common"
)

// ErrorKind says what went wrong talking to a BMC, in terms an operator can
// act on.
type ErrorKind int

// Error kinds.
const (
	// KindProtocol: the BMC answered, but not as expected (HTTP 4xx/5xx, an
	// IPMI completion code, an override that did not stick).
	KindProtocol ErrorKind = iota
	// KindUnreachable: nothing answered at the address (refused, no route,
	// no IPMI response).
	KindUnreachable
	// KindAuth: the BMC refused the credentials.
	KindAuth
	// KindUnsupported: the BMC or provider cannot do this operation.
	KindUnsupported
	// KindTimeout: the operation did not finish within its deadline.
	KindTimeout
)

func (k ErrorKind) String() string {
	switch k {
	case KindUnreachable:
		return "unreachable"
	case KindAuth:
		return "wrong credentials"
	case KindUnsupported:
		return "unsupported"
	case KindTimeout:
		return "timed out"
	}
	return "protocol error"
}

// Code is the kind as a stable token for records and scripts: auth,
// unreachable, timeout, unsupported or protocol.
func (k ErrorKind) Code() string {
	switch k {
	case KindUnreachable:
		return "unreachable"
	case KindAuth:
		return "auth"
	case KindUnsupported:
		return "unsupported"
	case KindTimeout:
		return "timeout"
	}
	return "protocol"
}

// Error is every error the Controller returns for an operation on a BMC.
// Use errors.As to get it and switch on Kind.
type Error struct {
	Kind     ErrorKind
	Address  string
	Protocol Protocol
	Op       string // e.g. "power-state", "set-power cycle", "set-boot pxe", "boot-override", "inventory", "event-log", "power-sync"
	Err      error
}

// Error reads like "BMC 10.1.7.7: wrong credentials (IPMI)", followed by the
// operation and the cause.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "BMC %s: %s (%s)", e.Address, e.Kind, protoName(e.Protocol))
	if e.Op != "" {
		b.WriteString(": ")
		b.WriteString(e.Op)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(oneLine(e.Err.Error()))
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func protoName(p Protocol) string {
	switch p {
	case IPMI:
		return "IPMI"
	case Redfish:
		return "Redfish"
	}
	return string(p)
}

// oneLine folds ipmitool's multi-line output so that errors stay one line
// in logs and on the CLI.
func oneLine(s string) string {
	f := strings.Fields(s)
	return strings.Join(f, " ")
}

// ErrIPMIToolMissing is returned for IPMI endpoints when the ipmitool
// binary is not on PATH; bmclib would otherwise skip its provider silently.
var ErrIPMIToolMissing = errors.New("ipmitool not found on PATH: install the Debian package ipmitool")

// ipmitool's texts, from ipmitool 1.8.19 lanplus (seen against ipmi_sim
// and documented in ipmitool's src/plugins/lanplus/lanplus.c).
var (
	ipmiAuthTexts = []string{
		"rakp 2 hmac is invalid", // wrong password
		"unauthorized name",      // unknown user
		"invalid session id",
		"password invalid",
		"requested privilege level exceeds limit",
		"unauthorized role",
	}
	ipmiUnreachableTexts = []string{
		"get auth capabilities error",
		"error issuing get channel authentication capabilities",
		"no response from remote controller",
		"unable to establish lan session",
		"connection refused",
		"no route to host",
		"network is unreachable",
		"address lookup for",
		"name or service not known",
	}
	ipmiUnsupportedTexts = []string{
		"invalid command",
		"not supported",
		"requested state type unknown",
	}
)

// transient says whether an error is worth retrying: the BMC may answer
// the next time. Wrong credentials never are (and retrying them locks
// accounts on some BMCs).
func transient(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Kind {
	case KindUnreachable, KindTimeout:
		return true
	case KindProtocol:
		var ge *gofishcommon.Error
		if errors.As(e.Err, &ge) && ge.HTTPReturnedStatusCode >= 500 {
			return true
		}
		return httpStatusIn(e.Err.Error(), 500, 599)
	}
	return false
}

// classify turns a provider error into a *Error. ctxErr is the error of
// the operation's own context, so that a deadline is reported as KindTimeout
// whatever the provider made of it.
func classify(ep Endpoint, op string, err error, ctxErr error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	out := &Error{Kind: kindOf(ep.Protocol, err, ctxErr), Address: ep.Address, Protocol: ep.Protocol, Op: op, Err: err}
	return out
}

func kindOf(p Protocol, err, ctxErr error) ErrorKind {
	if errors.Is(err, ErrIPMIToolMissing) {
		return KindUnsupported
	}
	// An auth answer is the BMC's word: it wins over a deadline that
	// expired while we were closing the session.
	var ge *gofishcommon.Error
	if errors.As(err, &ge) {
		switch ge.HTTPReturnedStatusCode {
		case 401, 403:
			return KindAuth
		case 404, 405, 501:
			return KindUnsupported
		}
	}
	msg := strings.ToLower(err.Error())
	if p == Redfish && (httpStatusIn(msg, 401, 401) || httpStatusIn(msg, 403, 403)) {
		return KindAuth
	}
	if p == IPMI {
		for _, t := range ipmiAuthTexts {
			if strings.Contains(msg, t) {
				return KindAuth
			}
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctxErr, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return KindTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindTimeout
	}
	if strings.Contains(msg, "client.timeout exceeded") || strings.Contains(msg, "i/o timeout") ||
		strings.Contains(msg, "context deadline exceeded") {
		return KindTimeout
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ECONNRESET) {
		return KindUnreachable
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return KindUnreachable
	}
	for _, t := range []string{"connection refused", "no route to host", "network is unreachable", "no such host", "connection reset by peer", "eof"} {
		if strings.Contains(msg, t) {
			return KindUnreachable
		}
	}
	if p == IPMI {
		for _, t := range ipmiUnreachableTexts {
			if strings.Contains(msg, t) {
				return KindUnreachable
			}
		}
		for _, t := range ipmiUnsupportedTexts {
			if strings.Contains(msg, t) {
				return KindUnsupported
			}
		}
	}
	if p == Redfish && (httpStatusIn(msg, 404, 405) || httpStatusIn(msg, 501, 501)) {
		return KindUnsupported
	}
	for _, t := range []string{"not implemented", "no provider", "not supported", "unsupported"} {
		if strings.Contains(msg, t) {
			return KindUnsupported
		}
	}
	return KindProtocol
}

// httpStatusIn looks for an HTTP status code in lo..hi in an error text.
// gofish's common.Error prints as "<code>: <body>" and bmclib sometimes
// flattens it into a string, losing the type.
func httpStatusIn(msg string, lo, hi int) bool {
	for code := lo; code <= hi; code++ {
		c := fmt.Sprint(code)
		// `"401: ...` is gofish's error quoted inside bmclib's JSON list of
		// failed links.
		if strings.HasPrefix(msg, c+":") || strings.Contains(msg, " "+c+":") || strings.Contains(msg, ": "+c+" ") ||
			strings.Contains(msg, `"`+c+":") ||
			strings.Contains(msg, "status code "+c) || strings.Contains(msg, "http "+c) {
			return true
		}
	}
	return false
}
