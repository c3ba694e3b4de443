package bmc

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/redfish"
)

func TestRedfishSELCarriesSeverityAndClears(t *testing.T) {
	for _, mode := range []redfish.Config{{}, {NoSessions: true}} {
		b := startRedfish(t, mode)
		b.AddSEL("Warning", "Fan 3 speed below threshold")
		b.AddSEL("Critical", "Uncorrectable ECC error on DIMM A3")
		c := testController(t, Config{})
		ctx := ctxT(t, 30*time.Second)
		evs, err := c.EventLog(ctx, b.ep)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 3 || evs[0].Severity != SeverityOK || evs[1].Severity != SeverityWarning || !evs[2].Critical() ||
			evs[2].Message != "Uncorrectable ECC error on DIMM A3" {
			t.Fatalf("no sessions %v: events %+v", mode.NoSessions, evs)
		}
		if err := c.ClearEventLog(ctx, b.ep); err != nil {
			t.Fatal(err)
		}
		evs, err = c.EventLog(ctx, b.ep)
		if err != nil || len(evs) != 1 || evs[0].Critical() || evs[0].Message != "Log cleared" {
			t.Fatalf("after clear: %+v, %v", evs, err)
		}
		if n := b.Sessions(); n != 0 {
			t.Fatalf("%d sessions left open", n)
		}
	}
}

func TestRedfishPowerLimitSetAndReadBack(t *testing.T) {
	for _, tc := range []struct{ mode, via string }{{"", "PowerControl"}, {"controls", "Control"}} {
		b := startRedfish(t, redfish.Config{PowerLimit: tc.mode})
		c := testController(t, Config{})
		got, err := c.SetPowerLimit(ctxT(t, 30*time.Second), b.ep, 4500)
		if err != nil {
			t.Fatalf("mode %q: %v", tc.mode, err)
		}
		if got.Watts != 4500 || got.Via != tc.via || b.PowerLimitW() != 4500 {
			t.Fatalf("mode %q: limit %+v, emulator %v", tc.mode, got, b.PowerLimitW())
		}
	}
}

func TestRedfishPowerLimitNotOffered(t *testing.T) {
	b := startRedfish(t, redfish.Config{PowerLimit: "none"})
	c := testController(t, Config{})
	_, err := c.SetPowerLimit(ctxT(t, 30*time.Second), b.ep, 4500)
	wantKind(t, err, KindUnsupported)
}

func TestRedfishPowerLimitRefusedByTheBMCIsNotApplied(t *testing.T) {
	b := startRedfish(t, redfish.Config{})
	c := testController(t, Config{})
	// Out of the emulator's range (500-6000 W): HTTP 400.
	_, err := c.SetPowerLimit(ctxT(t, 30*time.Second), b.ep, 90000)
	wantKind(t, err, KindProtocol)
	if b.PowerLimitW() != 0 {
		t.Fatalf("limit %v set", b.PowerLimitW())
	}
}

// TestRedfishPowerLimitFoundThroughEnvironmentMetrics: a chassis whose
// EnvironmentMetrics names the Power control as its PowerLimitWatts' data
// source (Redfish 2021+) is capped through that control. The emulator in
// "controls" mode is wrapped to serve EnvironmentMetrics and link it.
func TestRedfishPowerLimitFoundThroughEnvironmentMetrics(t *testing.T) {
	emu := redfish.NewServer(redfish.Config{Username: "admin", Password: "s3cret", PowerLimit: "controls"})
	const chassis, metrics = "/redfish/v1/Chassis/1", "/redfish/v1/Chassis/1/EnvironmentMetrics"
	var metricsRead atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimSuffix(r.URL.Path, "/") {
		case metrics:
			metricsRead.Store(true)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"@odata.id": metrics, "Id": "EnvironmentMetrics", "Name": "Environment Metrics",
				"PowerLimitWatts": map[string]any{"DataSourceUri": chassis + "/Controls/PowerLimit"}})
		case chassis:
			rec := httptest.NewRecorder()
			emu.ServeHTTP(rec, r)
			var doc map[string]any
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &doc) != nil {
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes())
				return
			}
			delete(doc, "Controls") // only EnvironmentMetrics leads to the control
			doc["EnvironmentMetrics"] = map[string]any{"@odata.id": metrics}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(doc)
		default:
			emu.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	ep := Endpoint{Address: ts.URL, Protocol: Redfish, Username: "admin", Password: "s3cret"}
	got, err := testController(t, Config{}).SetPowerLimit(ctxT(t, 30*time.Second), ep, 5200)
	if err != nil {
		t.Fatal(err)
	}
	if got.Watts != 5200 || got.Via != "Control" || emu.PowerLimitW() != 5200 || !metricsRead.Load() {
		t.Fatalf("limit %+v, emulator %v, EnvironmentMetrics read %v", got, emu.PowerLimitW(), metricsRead.Load())
	}
}
