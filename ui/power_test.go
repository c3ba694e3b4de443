package ui_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

func TestPowerPagesShowMeasuredDrawWithItsAgeAndMachinesWithoutReadings(t *testing.T) {
	w := newWorld(t)
	// ma1's BMC reported 9.5 kW three minutes ago; ma2's never reported.
	if err := w.svc.Inventory().RecordBMCStatus(context.Background(), "ma1", inventory.BMCStatus{Power: "on", Reachable: true, Outcome: "ok",
		ConsumedW: 9500, ReadAt: time.Now().Add(-3 * time.Minute).UTC()}); err != nil {
		t.Fatal(err)
	}
	c, _ := w.signIn(t, w.tech)
	page := func(path string) string {
		t.Helper()
		resp, err := c.Get(w.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		return string(b)
	}
	for path, wants := range map[string][]string{
		"/ui/site":     {"Measured", "9.5 kW on 1 machine, oldest reading 3 min old; 2 machines without a reading"},
		"/ui/halls/h1": {"9.5 kW measured (1 of 2 machines)", "not measured"},
		"/ui/racks/ra": {"Measured: 9.5 kW on 1 machine, oldest reading 3 min old; 1 machine without a reading.", "9.5 kW (3 min old)", "no reading"},
		"/ui/racks/rb": {"Measured: none yet: no BMC has reported a draw (1 machine)."},
	} {
		body := page(path)
		for _, want := range wants {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
	}
}
