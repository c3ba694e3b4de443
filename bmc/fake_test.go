package bmc

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bmc-toolbox/bmclib/v2/providers"
	"github.com/jacobweinstock/registrar"
	gofishcommon "github.com/stmcginnis/gofish/common"
)

// fakeDriver is a bmclib provider, plugged in with bmclib.WithRegistry, for
// what a real peer cannot easily show (exact retry counts). It complements
// the tests against lab/redfish and ipmi_sim, never replaces them.
type fakeDriver struct {
	name     string
	mu       sync.Mutex
	power    string
	openErrs []error // returned by successive Opens, then nil
	setErr   error
	opens    atomic.Int32
	sets     atomic.Int32
}

func (f *fakeDriver) Name() string { return f.name }
func (f *fakeDriver) Open(context.Context) error {
	f.opens.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.openErrs) > 0 {
		err := f.openErrs[0]
		f.openErrs = f.openErrs[1:]
		return err
	}
	return nil
}
func (f *fakeDriver) Close(context.Context) error { return nil }
func (f *fakeDriver) PowerStateGet(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.power, nil
}
func (f *fakeDriver) PowerSet(_ context.Context, state string) (bool, error) {
	f.sets.Add(1)
	if f.setErr != nil {
		return false, f.setErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch state {
	case "on", "cycle", "reset":
		f.power = "On"
	default:
		f.power = "Off"
	}
	return true, nil
}

func fakeController(t *testing.T, drivers ...*fakeDriver) *Controller {
	t.Helper()
	return testController(t, Config{Retries: 2, registry: func(Endpoint) *registrar.Registry {
		r := registrar.NewRegistry()
		for _, d := range drivers {
			r.Register(d.name, "redfish", registrar.Features{providers.FeaturePowerState, providers.FeaturePowerSet}, nil, d)
		}
		return r
	}})
}

var fakeEP = Endpoint{Address: "10.9.9.9", Protocol: Redfish, Username: "u", Password: "p"}

func TestRetryTransientThenSucceed(t *testing.T) {
	d := &fakeDriver{name: "gofish", power: "On", openErrs: []error{
		gofishcommon.ConstructError(503, nil), gofishcommon.ConstructError(502, nil),
	}}
	other := &fakeDriver{name: "dell", power: "Off"}
	c := fakeController(t, d, other)
	st, err := c.PowerState(ctxT(t, 10*time.Second), fakeEP)
	if err != nil || st != PowerOn {
		t.Fatalf("PowerState = %q, %v", st, err)
	}
	if n := d.opens.Load(); n != 3 {
		t.Fatalf("%d opens, want 3 (two 5xx retried)", n)
	}
	if n := other.opens.Load(); n != 0 {
		t.Fatalf("the registry was not filtered to one provider: dell opened %d times", n)
	}
}

func TestNoRetryOnAuth(t *testing.T) {
	d := &fakeDriver{name: "gofish", openErrs: []error{gofishcommon.ConstructError(401, nil)}}
	c := fakeController(t, d)
	_, err := c.PowerState(ctxT(t, 10*time.Second), fakeEP)
	wantKind(t, err, KindAuth)
	if n := d.opens.Load(); n != 1 {
		t.Fatalf("%d opens: wrong credentials were retried", n)
	}
}

func TestNoRetryAfterCycleSent(t *testing.T) {
	d := &fakeDriver{name: "gofish", power: "On", setErr: gofishcommon.ConstructError(503, nil)}
	c := fakeController(t, d)
	err := c.SetPower(ctxT(t, 10*time.Second), fakeEP, ActionCycle)
	wantKind(t, err, KindProtocol)
	if n := d.sets.Load(); n != 1 {
		t.Fatalf("cycle sent %d times: a power cycle must not be repeated", n)
	}
}

func TestAddrLocksDoNotGrow(t *testing.T) {
	var l addrLocks
	l.m = make(map[string]*addrLock)
	ctx := context.Background()
	var wg sync.WaitGroup
	var inside, maxInside atomic.Int32
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []string{"a", "b", "c"}[i%3]
			unlock, err := l.lock(ctx, key)
			if err != nil {
				t.Error(err)
				return
			}
			if key == "a" {
				n := inside.Add(1)
				if n > maxInside.Load() {
					maxInside.Store(n)
				}
				time.Sleep(time.Millisecond)
				inside.Add(-1)
			}
			unlock()
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Fatalf("%d holders of one address lock at once", maxInside.Load())
	}
	if n := l.size(); n != 0 {
		t.Fatalf("%d lock entries left", n)
	}
	// A waiter that gives up leaves no entry behind either.
	unlock, _ := l.lock(ctx, "x")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := l.lock(cctx, "x"); err == nil {
		t.Fatal("second lock of a held address succeeded")
	}
	unlock()
	if n := l.size(); n != 0 {
		t.Fatalf("%d lock entries left after a timed-out waiter", n)
	}
}
