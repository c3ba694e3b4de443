package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/api"
)

// sseData reads a stream up to its next data line.
func sseData(t *testing.T, r *bufio.Reader) (event, data string) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("live stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			event = v
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok {
			return event, v
		}
	}
}

func TestLiveRackStreamMovesWhenAnotherClientChangesAMachine(t *testing.T) {
	w := newWorld(t)
	c, _ := w.signIn(t, w.tech)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", w.url+"/ui/live?rack=ra", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("live stream: %s", resp.Status)
	}
	r := bufio.NewReader(resp.Body)
	type snap struct {
		Machines map[string]struct{ State string } `json:"machines"`
	}
	var first snap
	if _, data := sseData(t, r); json.Unmarshal([]byte(data), &first) != nil || first.Machines["ma2"].State != "enrolled" {
		t.Fatalf("first snapshot: %s", data)
	}
	// Another tenant's rack changes: this page has nothing to show of it.
	// Then ra's machine does, through the API.
	if err := w.admin.Do(ctx, "POST", "/api/v1/machines/mb1/maintenance", api.MaintenanceRequest{On: true, Reason: "rb's fan"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.admin.Do(ctx, "POST", "/api/v1/machines/ma2/maintenance", api.MaintenanceRequest{On: true, Reason: "psu"}, nil); err != nil {
		t.Fatal(err)
	}
	// The next snapshot the stream sends is the one that differs: ma2 in
	// maintenance (one without a change is never sent).
	var next snap
	if _, data := sseData(t, r); json.Unmarshal([]byte(data), &next) != nil || next.Machines["ma2"].State != "maintenance" || len(next.Machines) != 2 {
		t.Fatalf("after the change: %s", data)
	}
}
