package bmc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/redfish"
)

type memSink struct {
	targets []Target
	mu      sync.Mutex
	got     map[string][]Status
}

func (m *memSink) BMCTargets(context.Context) ([]Target, error) { return m.targets, nil }
func (m *memSink) RecordBMCStatus(_ context.Context, machine string, st Status) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got[machine] = append(m.got[machine], st)
	return nil
}

func (m *memSink) rounds(machine string) []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Status(nil), m.got[machine]...)
}

func TestSyncPower(t *testing.T) {
	f, err := redfish.StartFleet("127.0.0.1", 12, 0, func(i int) redfish.Config {
		return redfish.Config{Username: "u", Password: "p", PowerOn: i%2 == 0}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	sink := &memSink{got: map[string][]Status{}}
	for i, b := range f.BMCs {
		sink.targets = append(sink.targets, Target{Machine: "m" + string(rune('a'+i)), Endpoint: Endpoint{Address: "http://" + b.Addr, Protocol: Redfish, Username: "u", Password: "p"}})
	}
	// One with a wrong password (reachable, error), one dead.
	sink.targets = append(sink.targets, Target{Machine: "badpw", Endpoint: Endpoint{Address: "http://" + f.BMCs[0].Addr, Protocol: Redfish, Username: "u", Password: "x"}})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	sink.targets = append(sink.targets, Target{Machine: "dead", Endpoint: Endpoint{Address: "http://" + dead, Protocol: Redfish, Username: "u", Password: "p"}})

	c := testController(t, Config{MaxConcurrent: 4, OpTimeout: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.SyncPower(ctx, sink, 100*time.Millisecond); close(done) }()

	deadline := time.Now().Add(20 * time.Second)
	for len(sink.rounds("dead")) < 2 || len(sink.rounds("ma")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("SyncPower did not complete two rounds")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SyncPower did not stop with its context")
	}
	if st := sink.rounds("ma")[0]; st.Power != PowerOn || !st.Reachable || st.LastError != "" || st.ReadAt.IsZero() {
		t.Fatalf("ma: %+v", st)
	}
	if st := sink.rounds("mb")[0]; st.Power != PowerOff || !st.Reachable {
		t.Fatalf("mb: %+v", st)
	}
	// The sync reads the measured draw too: 1000 W on, 5% of it off (the
	// emulator's defaults).
	if st := sink.rounds("ma")[0]; !st.WattsMeasured || st.ConsumedWatts != 1000 || st.Outcome != OutcomeOK {
		t.Fatalf("ma: draw %+v", st)
	}
	if st := sink.rounds("mb")[0]; !st.WattsMeasured || st.ConsumedWatts != 50 {
		t.Fatalf("mb: draw %+v", st)
	}
	// And the sensors, in the same session.
	if st := sink.rounds("ma")[0]; len(st.Sensors.Fans) != 4 || len(st.Sensors.PSUs) != 2 {
		t.Fatalf("ma: sensors %+v", st.Sensors)
	} else if in, ok := st.Sensors.Inlet(); !ok || in != 24 {
		t.Fatalf("ma: inlet %v %v", in, ok)
	}
	if st := sink.rounds("badpw")[0]; !st.Reachable || st.Power != PowerUnknown || st.LastError == "" || st.Outcome != "auth" || st.WattsMeasured {
		t.Fatalf("badpw: %+v", st)
	}
	if st := sink.rounds("dead")[0]; st.Reachable || st.LastError == "" || st.Outcome != "unreachable" {
		t.Fatalf("dead: %+v", st)
	}
	if n := c.locks.size(); n != 0 {
		t.Fatalf("%d per-BMC locks left", n)
	}
}
