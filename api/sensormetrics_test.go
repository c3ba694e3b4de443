package api

import (
	"context"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/metalhall/metalhall/inventory"
)

// TestSensorMetricsAreBoundedAndPassPromtool: the health metrics have one
// inlet series per machine that reports one and four fan/PSU series per
// machine with sensors, whatever the sensors are called, and pass
// `promtool check metrics`.
func TestSensorMetricsAreBoundedAndPassPromtool(t *testing.T) {
	ctx := context.Background()
	inv := must(inventory.Open(filepath.Join(t.TempDir(), "db"), inventory.Options{}))
	t.Cleanup(func() { inv.Close() })
	must(inv.CreateSite(ctx, inventory.Site{Name: "s"}))
	must(inv.CreateHall(ctx, inventory.Hall{Name: "h", Site: "s"}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h", Number: 1, BudgetW: 1_000_000}))
	must(inv.CreateRack(ctx, inventory.Rack{Name: "r", Hall: "h", Phase: 1, BudgetW: 100_000}))
	for i, n := range []string{"m1", "m2", "m3"} {
		must(inv.EnrollMachine(ctx, inventory.Enrollment{Machine: inventory.Machine{Name: n, Rack: "r", Unit: 1 + 2*i,
			MACs: []string{"52:54:00:00:00:0" + string(rune('1'+i))}, PowerW: 10_000,
			BMC: inventory.BMC{Address: "127.0.0.1:" + string(rune('1'+i)), Protocol: inventory.ProtocolIPMI, Username: "admin"}}}))
	}
	st := inventory.BMCStatus{Power: "on", Reachable: true, Outcome: "ok", ReadAt: time.Now(),
		Sensors: &inventory.SensorSummary{InletC: 24, HasInlet: true, Fans: 8, FansOK: 7, PSUs: 2, PSUsOK: 2, WattsNotOffered: true}}
	if err := inv.RecordBMCStatus(ctx, "m1", st); err != nil {
		t.Fatal(err)
	}
	st.Sensors = &inventory.SensorSummary{Fans: 4, FansOK: 4, PSUs: 2, PSUsOK: 1} // no inlet
	if err := inv.RecordBMCStatus(ctx, "m2", st); err != nil {
		t.Fatal(err)
	}
	must(inv.UpdateMachine(ctx, "m1", func(m *inventory.Machine) error {
		m.PowerLimit = &inventory.PowerLimitRecord{LimitW: 9000, State: "applied", Via: "PowerControl", At: time.Now()}
		return nil
	}))
	must(inv.UpdateMachine(ctx, "m2", func(m *inventory.Machine) error {
		m.PowerLimit = &inventory.PowerLimitRecord{LimitW: 9000, State: "unsupported", At: time.Now()}
		return nil
	}))

	reg := prometheus.NewRegistry()
	reg.MustRegister(&sensorCollector{inv: inv})
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`metalhall_machine_inlet_celsius{machine="m1"} 24`,
		`metalhall_machine_health_sensors{kind="fan",machine="m1",state="failed"} 1`,
		`metalhall_machine_health_sensors{kind="fan",machine="m1",state="ok"} 7`,
		`metalhall_machine_health_sensors{kind="psu",machine="m2",state="failed"} 1`,
		`metalhall_machine_power_limit_watts{machine="m1"} 9000`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	var series int
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "metalhall_") {
			series++
		}
	}
	// m1: inlet + 4 + limit; m2: 4 (no inlet, limit not applied); m3: none.
	if series != 10 {
		t.Errorf("%d series, want 10:\n%s", series, body)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; make deps installs it)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
