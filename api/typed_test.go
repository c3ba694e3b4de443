package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// TestOperationsMatchTheRouteTable fails when an operation the client
// offers names an action no route has, or sends or decodes other types
// than its route's, and when a route has no operation.
func TestOperationsMatchTheRouteTable(t *testing.T) {
	covered := map[string]bool{}
	ops := reflect.ValueOf(Ops)
	for i := 0; i < ops.NumMethod(); i++ {
		name := ops.Type().Method(i).Name
		o := ops.Method(i).Call(nil)[0].Interface().(interface {
			Action() string
			check() error
		})
		if err := o.check(); err != nil {
			t.Errorf("Ops.%s: %v", name, err)
		}
		covered[o.Action()] = true
	}
	for _, rt := range clientRoutes() {
		if !covered[rt.action] {
			t.Errorf("route %s %s (%s) has no operation in Ops (operations.go)", rt.method, rt.pattern, rt.action)
		}
	}
}

func TestAnOperationOfTheWrongTypesIsRefusedBeforeItIsSent(t *testing.T) {
	var sent atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { sent.Store(true) }))
	defer srv.Close()
	c := NewClient(srv.URL, "")
	ctx := context.Background()
	cases := map[string]error{}
	_, cases["unknown action"] = Call(ctx, c, op[NoBody, NoReply]("machine.explode"), NoBody{}, "m1")
	_, cases["wrong body"] = Call(ctx, c, op[HallCreate, inventory.Site]("site.create"), HallCreate{})
	_, cases["wrong reply"] = Call(ctx, c, op[SiteCreate, inventory.Hall]("site.create"), SiteCreate{})
	_, cases["path values missing"] = Call(ctx, c, Ops.MachineShow(), NoBody{})
	_, cases["path values extra"] = Call(ctx, c, Ops.SiteList(), NoBody{}, "x")
	for name, err := range cases {
		var ae *APIError
		if err == nil || errors.As(err, &ae) {
			t.Errorf("%s: %v, want a refusal by the client", name, err)
		}
	}
	if sent.Load() {
		t.Error("a refused operation reached the server")
	}
}

func TestCallFillsThePatternAndEscapesEachValue(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Method + " " + r.URL.EscapedPath() + "?" + r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"hall":"h/1","number":2}`))
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "")
	ph, err := Call(context.Background(), c, Ops.PhaseSetState().Query(map[string][]string{"why": {"a b"}}),
		StateChange{To: "live"}, "h/1", "2")
	if err != nil {
		t.Fatal(err)
	}
	if req, want := <-got, "POST /api/v1/halls/h%2F1/phases/2/state?why=a+b"; req != want {
		t.Errorf("request %s, want %s", req, want)
	}
	if ph.Hall != "h/1" || ph.Number != 2 {
		t.Errorf("reply decoded as %+v", ph)
	}
}
