package bmc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/ipmisim"
)

// Health over IPMI, against ipmi_sim: SEL entries added through its LAN
// interface (`ipmitool sel add`, as a BMC's own sensors log them), the
// sensors its SDRs describe, and DCMI, which it does not answer.

func TestIPMISELEntriesAreJudgedFromTheirRawRecords(t *testing.T) {
	sim, ep := startSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 60*time.Second)
	// Uncorrectable ECC on memory sensor 1; its deassertion; a
	// correctable ECC; a fan below its lower critical threshold.
	for _, ev := range [][7]byte{
		{0x04, 0x0c, 0x01, 0x6f, 0x01, 0xff, 0xff},
		{0x04, 0x0c, 0x01, 0xef, 0x01, 0xff, 0xff},
		{0x04, 0x0c, 0x01, 0x6f, 0x00, 0xff, 0xff},
		{0x04, 0x04, 0x02, 0x01, 0x52, 0x00, 0x0a},
	} {
		if err := sim.AddSEL(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	events, err := c.EventLog(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 4 {
		t.Fatalf("got %d entries, want 4: %+v", len(events), events)
	}
	want := []Severity{SeverityCritical, SeverityOK, SeverityWarning, SeverityCritical}
	for i, e := range events {
		if e.Severity != want[i] {
			t.Errorf("entry %s %q: severity %q (%s), want %q", e.ID, e.Message, e.Severity, e.Reason, want[i])
		}
	}
	if !strings.Contains(events[0].Message, "Uncorrectable ECC") || !strings.Contains(events[0].Reason, "sensor type 0x0C") {
		t.Fatalf("first entry: %+v", events[0])
	}

	if err := c.ClearEventLog(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if events, err := c.EventLog(ctx, ep); err != nil || len(events) != 0 {
		t.Fatalf("after clear: %+v, %v", events, err)
	}
}

func TestIPMISensorsFromTheSDRAndNoDCMI(t *testing.T) {
	// PSU 2 reports a failure.
	_, ep := startSim(t, ipmisim.Config{Emu: "sensor_set_bit 0x20 0 5 1 1 0"})
	c := testController(t, Config{})
	ctx := ctxT(t, 60*time.Second)
	s, err := c.Sensors(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if in, ok := s.Inlet(); !ok || in != 24 {
		t.Fatalf("inlet %v %v; sensors %+v", in, ok, s)
	}
	if len(s.Fans) != 2 || s.Fans[0].Reading != 9600 || s.Fans[0].Units != "RPM" || s.Fans[0].Health != "OK" {
		t.Fatalf("fans %+v", s.Fans)
	}
	if len(s.PSUs) != 2 || s.PSUs[0].State != "Enabled" || s.PSUs[0].Health != "OK" || s.PSUs[1].Health != "Critical" {
		t.Fatalf("PSUs %+v", s.PSUs)
	}
	// ipmi_sim answers DCMI with "Invalid command": no draw, and said so.
	if s.PowerMeasured || !s.WattsUnsupported {
		t.Fatalf("power measured %v, unsupported %v", s.PowerMeasured, s.WattsUnsupported)
	}
	if _, err := c.SetPowerLimit(ctx, ep, 8000); !isKind(err, KindUnsupported) {
		t.Fatalf("DCMI power limit on ipmi_sim: %v, want unsupported", err)
	}
}

func TestIPMIPowerSyncReadsSensors(t *testing.T) {
	_, ep := startSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	st := c.readStatus(ctxT(t, 60*time.Second), ep)
	if st.Outcome != OutcomeOK || st.Power != PowerOff {
		t.Fatalf("status %+v", st)
	}
	if _, ok := st.Sensors.Inlet(); !ok || len(st.Sensors.Fans) != 2 || !st.Sensors.WattsUnsupported || st.WattsMeasured {
		t.Fatalf("sensors %+v", st.Sensors)
	}
}

func TestClassifyIPMIRecord(t *testing.T) {
	rec := func(recType, sensorType, evType, data1 byte) [16]byte {
		return [16]byte{0x01, 0x00, recType, 0, 0, 0, 0, 0x20, 0x00, 0x04, sensorType, 0x01, evType, data1, 0xff, 0xff}
	}
	for _, tc := range []struct {
		name string
		rec  [16]byte
		want Severity
	}{
		{"uncorrectable ECC", rec(0x02, 0x0c, 0x6f, 0x01), SeverityCritical},
		{"uncorrectable ECC deasserted", rec(0x02, 0x0c, 0xef, 0x01), SeverityOK},
		{"correctable ECC", rec(0x02, 0x0c, 0x6f, 0x00), SeverityWarning},
		{"processor IERR", rec(0x02, 0x07, 0x6f, 0x00), SeverityCritical},
		{"processor presence", rec(0x02, 0x07, 0x6f, 0x07), SeverityOK},
		{"PSU failure", rec(0x02, 0x08, 0x6f, 0x01), SeverityCritical},
		{"PSU presence", rec(0x02, 0x08, 0x6f, 0x00), SeverityOK},
		{"PSU AC lost", rec(0x02, 0x08, 0x6f, 0x03), SeverityWarning},
		{"PCI SERR", rec(0x02, 0x13, 0x6f, 0x05), SeverityCritical},
		{"POST error", rec(0x02, 0x0f, 0x6f, 0x00), SeverityCritical},
		{"OS stop", rec(0x02, 0x20, 0x6f, 0x01), SeverityWarning},
		{"temperature upper critical going high", rec(0x02, 0x01, 0x01, 0x59), SeverityCritical},
		{"temperature upper non-critical going high", rec(0x02, 0x01, 0x01, 0x57), SeverityWarning},
		{"fan lower non-recoverable", rec(0x02, 0x04, 0x01, 0x04), SeverityCritical},
		{"generic severity to critical", rec(0x02, 0x2b, 0x07, 0x02), SeverityCritical},
		{"OEM record", rec(0xc0, 0x0c, 0x6f, 0x01), ""},
	} {
		if got, why := ClassifyIPMIRecord(tc.rec); got != tc.want {
			t.Errorf("%s: %q (%s), want %q", tc.name, got, why, tc.want)
		}
	}
}

func isKind(err error, k ErrorKind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}
