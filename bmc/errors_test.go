package bmc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-multierror"
	pkgerrors "github.com/pkg/errors"
	gofishcommon "github.com/stmcginnis/gofish/common"
)

// wrapLikeBmclib wraps err the way bmclib v2.3.5 does on its way out:
// pkg/errors WithMessagef("provider: gofish") inside a go-multierror.
func wrapLikeBmclib(err error) error {
	return multierror.Append(nil, pkgerrors.WithMessagef(err, "provider: %v", "x"), errors.New("no Opener implementations found"))
}

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		name   string
		proto  Protocol
		err    error
		ctxErr error
		want   ErrorKind
		retry  bool
	}{
		// Redfish through gofish: typed HTTP errors.
		{"redfish 401", Redfish, wrapLikeBmclib(gofishcommon.ConstructError(401, []byte(`{"error":{"message":"bad"}}`))), nil, KindAuth, false},
		{"redfish 403", Redfish, wrapLikeBmclib(gofishcommon.ConstructError(403, nil)), nil, KindAuth, false},
		{"redfish 401 as text", Redfish, errors.New("provider: gofish: 401: Unauthorized"), nil, KindAuth, false},
		{"redfish 503", Redfish, wrapLikeBmclib(gofishcommon.ConstructError(503, nil)), nil, KindProtocol, true},
		{"redfish 500 as text", Redfish, errors.New("provider: gofish: 500: boom"), nil, KindProtocol, true},
		{"redfish 400", Redfish, wrapLikeBmclib(gofishcommon.ConstructError(400, nil)), nil, KindProtocol, false},
		{"redfish 404", Redfish, wrapLikeBmclib(gofishcommon.ConstructError(404, nil)), nil, KindUnsupported, false},
		{"redfish refused", Redfish, wrapLikeBmclib(fmt.Errorf("Get \"http://x/redfish/v1/\": %w", refused)), nil, KindUnreachable, true},
		{"redfish client timeout", Redfish, errors.New(`Get "https://10.1.7.7/redfish/v1/": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`), nil, KindTimeout, true},
		{"redfish ctx deadline", Redfish, wrapLikeBmclib(context.DeadlineExceeded), nil, KindTimeout, true},
		{"redfish no such host", Redfish, &net.DNSError{Err: "no such host", Name: "bmc-x"}, nil, KindUnreachable, true},
		{"redfish no provider", Redfish, errors.New("not a BootDeviceOverrideGetter implementation: *ipmitool.Conn"), nil, KindProtocol, false},
		// ipmitool's texts (lanplus, ipmitool 1.8.19).
		{"ipmi wrong password", IPMI, wrapLikeBmclib(errors.New("> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session")), nil, KindAuth, false},
		{"ipmi unknown user", IPMI, errors.New("RAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session"), nil, KindAuth, false},
		{"ipmi ambiguous", IPMI, errors.New("exit status 1: Error: Unable to establish IPMI v2 / RMCP+ session"), nil, KindProtocol, false},
		{"ipmi no answer", IPMI, errors.New("Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request"), nil, KindUnreachable, true},
		{"ipmi no response", IPMI, errors.New("No response from remote controller"), nil, KindUnreachable, true},
		{"ipmi killed at deadline", IPMI, errors.New("signal: killed"), context.DeadlineExceeded, KindTimeout, true},
		{"ipmi invalid command", IPMI, errors.New("Set Chassis Power Control to Cycle failed: Invalid command"), nil, KindUnsupported, false},
		{"ipmitool missing", IPMI, fmt.Errorf("x: %w", ErrIPMIToolMissing), nil, KindUnsupported, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := classify(Endpoint{Address: "10.1.7.7", Protocol: tc.proto}, "power-state", tc.err, tc.ctxErr)
			if e.Kind != tc.want {
				t.Fatalf("kind = %v, want %v (err %q)", e.Kind, tc.want, tc.err)
			}
			if got := transient(e); got != tc.retry {
				t.Fatalf("transient = %v, want %v", got, tc.retry)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Kind: KindAuth, Address: "10.1.7.7", Protocol: IPMI, Op: "set-power cycle", Err: errors.New("RAKP 2 HMAC is invalid\nError: x")}
	want := "BMC 10.1.7.7: wrong credentials (IPMI): set-power cycle: RAKP 2 HMAC is invalid Error: x"
	if e.Error() != want {
		t.Fatalf("Error() = %q\nwant      %q", e.Error(), want)
	}
	var got *Error
	if !errors.As(fmt.Errorf("machine gpu-a01-07: %w", e), &got) || got.Kind != KindAuth {
		t.Fatal("errors.As through a wrapper failed")
	}
}

func TestEndpointHidesPassword(t *testing.T) {
	ep := Endpoint{Address: "10.1.7.7", Protocol: Redfish, Username: "root", Password: "Hunter2-secret"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "bmc", ep)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "bmc", ep)
	for _, s := range []string{fmt.Sprint(ep), fmt.Sprintf("%v %+v %#v %s", ep, ep, ep, ep), buf.String()} {
		if strings.Contains(s, "Hunter2") {
			t.Fatalf("password leaked: %s", s)
		}
	}
	if !strings.Contains(buf.String(), "10.1.7.7") {
		t.Fatalf("log lacks the address: %s", buf.String())
	}
}

func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		ep                 Endpoint
		scheme, host, port string
	}{
		{Endpoint{Address: "10.1.7.7", Protocol: IPMI}, "", "10.1.7.7", "623"},
		{Endpoint{Address: "10.1.7.7:6230", Protocol: IPMI}, "", "10.1.7.7", "6230"},
		{Endpoint{Address: "10.1.7.7", Protocol: Redfish}, "", "10.1.7.7", "443"},
		{Endpoint{Address: "http://127.0.0.1:8000/", Protocol: Redfish}, "http", "127.0.0.1", "8000"},
		{Endpoint{Address: "[fd00::7]:8443", Protocol: Redfish}, "", "fd00::7", "8443"},
		{Endpoint{Address: "fd00::7", Protocol: IPMI}, "", "fd00::7", "623"},
	} {
		s, h, p, err := tc.ep.hostPort()
		if err != nil || s != tc.scheme || h != tc.host || p != tc.port {
			t.Errorf("%q: got %q %q %q %v", tc.ep.Address, s, h, p, err)
		}
	}
	if _, _, _, err := (Endpoint{Address: "ftp://x"}).hostPort(); err == nil {
		t.Error("ftp scheme accepted")
	}
}

func TestParseBootParam5(t *testing.T) {
	out := `Boot parameter version: 1
Boot parameter 5 is valid/unlocked
Boot parameter data: e004000000
 Boot Flags :
   - Boot Flag Valid
   - Options apply to all future boots
   - BIOS EFI boot 
   - Boot Device Selector : Force PXE
`
	bo, err := parseBootParam5(out)
	if err != nil || bo.Device != BootPXE || !bo.Persistent || !bo.UEFI {
		t.Fatalf("got %+v, %v", bo, err)
	}
	for sel, want := range map[string]BootDevice{
		"Force Boot from default Hard-Drive": BootDisk,
		"Force Boot into BIOS Setup":         BootBIOS,
		"Force Boot from CD/DVD":             BootCDROM,
		"No override":                        BootNone,
	} {
		bo, err := parseBootParam5("   - Boot Device Selector : " + sel + "\n")
		if err != nil || bo.Device != want {
			t.Errorf("%q: %+v, %v", sel, bo, err)
		}
	}
	if _, err := parseBootParam5("garbage"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestNormalisePower(t *testing.T) {
	for in, want := range map[string]PowerState{
		"On": PowerOn, "Off": PowerOff, "Chassis Power is on\n": PowerOn, "Chassis Power is off\n": PowerOff,
		"PoweringOn": PowerUnknown, "": PowerUnknown,
	} {
		if got := normalisePower(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
