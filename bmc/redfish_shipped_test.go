package bmc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/redfish"
)

// Redfish as vendors ship it: BMCs without sessions, with several systems,
// slow ones, and ones that keep another override than the one asked for.

func TestRedfishUsesBasicAuthWhenTheBMCOffersNoSessions(t *testing.T) {
	b := startRedfish(t, redfish.Config{NoSessions: true})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	if err := c.SetPower(ctx, b.ep, ActionOn); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootPXE, UEFI: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPower(ctx, b.ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPower(ctx, b.ep, ActionOff); err != nil {
		t.Fatal(err)
	}
	if b.Power() {
		t.Fatal("machine still on")
	}
	if got := b.Resets(); strings.Join(got, ",") != "On,ForceRestart,ForceOff" {
		t.Fatalf("resets %v", got)
	}

	bad := b.ep
	bad.Password = "not-it"
	_, err := c.PowerState(ctx, bad)
	wantKind(t, err, KindAuth)
}

func TestRedfishSessionAuthRefusedClearlyWhereTheBMCHasNone(t *testing.T) {
	b := startRedfish(t, redfish.Config{NoSessions: true})
	c := testController(t, Config{})
	ep := b.ep
	ep.Auth = AuthSession
	_, err := c.PowerState(ctxT(t, 30*time.Second), ep)
	e := wantKind(t, err, KindUnsupported)
	if !strings.Contains(e.Error(), "links no Sessions") {
		t.Fatalf("error does not say why: %v", e)
	}
	// Forced basic auth works against a BMC that offers sessions too.
	b2 := startRedfish(t, redfish.Config{PowerOn: true})
	ep2 := b2.ep
	ep2.Auth = AuthBasic
	if st, err := c.PowerState(ctxT(t, 30*time.Second), ep2); err != nil || st != PowerOn {
		t.Fatalf("basic auth: %v %v", st, err)
	}
}

func TestRedfishDrivesTheHostOfABMCWithSeveralSystems(t *testing.T) {
	b := startRedfish(t, redfish.Config{Baseboard: true, Serial: "GB300-HOST-1", GPUs: 4})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootPXE, UEFI: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPower(ctx, b.ep, ActionOn); err != nil {
		t.Fatal(err)
	}
	inv, err := c.Inventory(ctx, b.ep)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Serial != "GB300-HOST-1" || len(inv.GPUs) != 4 {
		t.Fatalf("inventory read from the wrong system: %+v", inv)
	}

	// Named by the machine: by Id works; a system it does not list is
	// refused with the list.
	named := b.ep
	named.System = "System_0"
	if st, err := c.PowerState(ctx, named); err != nil || st != PowerOn {
		t.Fatalf("named System_0: %v %v", st, err)
	}
	named.System = "System_9"
	_, err = c.PowerState(ctx, named)
	e := wantKind(t, err, KindUnsupported)
	if !strings.Contains(e.Error(), "System_0, HGX_Baseboard_0") {
		t.Fatalf("error does not list the systems: %v", e)
	}
}

func TestRedfishSlowBMCStaysWithinTheTryDeadline(t *testing.T) {
	// Each request takes 300ms; a try has 1s. Requests are sequential, so
	// no more than four can have started before the deadline — a slower
	// machine only makes it fewer. The logout that ends the try gets a few
	// seconds of its own (BMCs run out of sessions): five in all. Before
	// every request was bounded by the try's deadline, the whole login and
	// read ran on (ten requests and more).
	b := startRedfish(t, redfish.Config{Latency: 300 * time.Millisecond, PowerOn: true})
	c := testController(t, Config{OpTimeout: time.Second, Retries: -1})
	_, err := c.PowerState(ctxT(t, 30*time.Second), b.ep)
	wantKind(t, err, KindTimeout)
	if n := b.Requests(); n > 5 {
		t.Fatalf("%d requests started in a 1s try at 300ms each: the try overran its deadline", n)
	}
}

func TestRedfishBootOverrideVerifiedInFull(t *testing.T) {
	// sushy-tools keeps overrides Continuous when asked for Once.
	b := startRedfish(t, redfish.Config{OnceAsContinuous: true})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootPXE, UEFI: true})
	e := wantKind(t, err, KindProtocol)
	if !strings.Contains(e.Error(), "for every boot") {
		t.Fatalf("error does not say the override stays: %v", e)
	}
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootPXE, Persistent: true, UEFI: true}); err != nil {
		t.Fatal(err)
	}

	// Legacy (BIOS) mode is asked for and verified.
	b2 := startRedfish(t, redfish.Config{})
	if err := c.SetBootDevice(ctx, b2.ep, BootOptions{Device: BootPXE}); err != nil {
		t.Fatal(err)
	}
	if got := b2.Boot(); got != (redfish.BootOverride{Target: "Pxe", Enabled: "Once", Mode: "Legacy"}) {
		t.Fatalf("emulator boot = %+v", got)
	}
}

func TestRedfishOnceOverrideIsUsedByTheNextBoot(t *testing.T) {
	b := startRedfish(t, redfish.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootPXE, UEFI: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPower(ctx, b.ep, ActionOn); err != nil {
		t.Fatal(err)
	}
	bo, err := c.BootOverride(ctx, b.ep)
	if err != nil {
		t.Fatal(err)
	}
	if bo.Device != BootNone || bo.Persistent {
		t.Fatalf("after the boot the override is %+v, want none", bo)
	}
	// A continuous one stays.
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootDisk, Persistent: true, UEFI: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPower(ctx, b.ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	if got := b.Boot(); got.Target != "Hdd" || got.Enabled != "Continuous" {
		t.Fatalf("continuous override gone after a cycle: %+v", got)
	}
}

func TestOneClassificationOfEveryOutcome(t *testing.T) {
	at := time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	cases := []struct {
		err       error
		outcome   string
		reachable bool
	}{
		{nil, OutcomeOK, true},
		{&Error{Kind: KindAuth}, "auth", true},
		{&Error{Kind: KindProtocol}, "protocol", true},
		{&Error{Kind: KindUnsupported}, "unsupported", true},
		{&Error{Kind: KindUnreachable}, "unreachable", false},
		{&Error{Kind: KindTimeout}, "timeout", false},
		{errors.New("machine has no BMC password"), "protocol", true},
	}
	for _, tc := range cases {
		st := StatusOf(PowerUnknown, tc.err, at)
		if st.Outcome != tc.outcome || st.Reachable != tc.reachable || (tc.err == nil) != (st.LastError == "") {
			t.Errorf("%v: got %+v, want outcome %s reachable %v", tc.err, st, tc.outcome, tc.reachable)
		}
	}
	// The sync records success with its outcome too.
	b := startRedfish(t, redfish.Config{PowerOn: true})
	c := testController(t, Config{})
	if st := c.readStatus(ctxT(t, 30*time.Second), b.ep); st.Outcome != OutcomeOK || !st.Reachable || st.Power != PowerOn {
		t.Fatalf("sync status %+v", st)
	}
}

func TestRedfishSensorsAndMeasuredPower(t *testing.T) {
	b := startRedfish(t, redfish.Config{Baseboard: true, InletCelsius: 27.5, WattsOn: 9800})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	off, err := c.Sensors(ctx, b.ep)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetPower(ctx, b.ep, ActionOn); err != nil {
		t.Fatal(err)
	}
	on, err := c.Sensors(ctx, b.ep)
	if err != nil {
		t.Fatal(err)
	}
	if in, ok := on.Inlet(); !ok || in != 27.5 {
		t.Fatalf("inlet %v %v, want 27.5", in, ok)
	}
	if !on.PowerMeasured || on.ConsumedWatts != 9800 || off.ConsumedWatts >= on.ConsumedWatts {
		t.Fatalf("power: off %+v on %+v", off, on)
	}
	if len(on.Fans) != 4 || on.Fans[0].Units != "RPM" || on.Fans[0].Reading <= off.Fans[0].Reading {
		t.Fatalf("fans: off %+v on %+v", off.Fans, on.Fans)
	}
	if len(on.PSUs) != 2 || on.PSUs[0].Health != "OK" || on.PSUs[0].State != "Enabled" {
		t.Fatalf("PSUs %+v", on.PSUs)
	}
}
