package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/lab/redfish"
	"github.com/metalhall/metalhall/service/servicetest"
)

// world is a running service with a hall, two tenants' racks and
// machines behind loopback Redfish emulators, and a token per role.
type world struct {
	svc                    *servicetest.Running
	url                    string
	admin                  *api.Client
	tech, tenantA, tenantB string
	bmcs                   map[string]*redfish.Server
}

// fixture machines: rack ra (tenant ta) holds ma1 in U1 (2U) and ma2 in
// U5; rack rb (tenant tb) holds mb1 in U3.
var fixtureMachines = []struct {
	name, rack string
	unit       int
}{{"ma1", "ra", 1}, {"ma2", "ra", 5}, {"mb1", "rb", 3}}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	svc := servicetest.Start(t, "", nil)
	w := &world{svc: svc, url: svc.AdminURL(), admin: api.NewClient(svc.AdminURL(), svc.Token), bmcs: map[string]*redfish.Server{}}
	do := func(method, path string, in any) {
		t.Helper()
		if err := w.admin.Do(ctx, method, path, in, nil); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	do("POST", "/api/v1/sites", api.SiteCreate{Name: "s1"})
	do("POST", "/api/v1/halls", api.HallCreate{Name: "h1", Site: "s1"})
	do("POST", "/api/v1/halls/h1/phases", api.PhaseCreate{Number: 1, PowerKW: 2000, TargetDate: "2027-03-01"})
	do("POST", "/api/v1/halls/h1/phases/1/state", api.StateChange{To: "commissioning"})
	for _, tn := range []string{"ta", "tb"} {
		do("POST", "/api/v1/tenants", api.TenantCreate{Name: tn})
	}
	do("POST", "/api/v1/racks", api.RackCreate{Name: "ra", Hall: "h1", Phase: 1, Row: "A", Units: 12, PowerKW: 60})
	do("POST", "/api/v1/racks", api.RackCreate{Name: "rb", Hall: "h1", Phase: 1, Row: "B", Units: 12, PowerKW: 60})
	// Racked and cabled: a planned rack has no power, and a power-on there
	// is refused.
	do("POST", "/api/v1/racks/ra/state", api.StateChange{To: "installed"})
	do("POST", "/api/v1/racks/rb/state", api.StateChange{To: "installed"})
	for i, m := range fixtureMachines {
		bmc := redfish.NewServer(redfish.Config{Username: "root", Password: "calvin", GPUs: 8})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: bmc}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		w.bmcs[m.name] = bmc
		height := 1
		if m.name == "ma1" {
			height = 2
		}
		do("POST", "/api/v1/machines", api.MachineEnroll{Name: m.name, Rack: m.rack, Unit: m.unit, Height: height,
			MACs: []string{fmt.Sprintf("52:54:00:00:00:%02x", i+1)}, BMCAddress: "http://" + ln.Addr().String(),
			BMCProtocol: "redfish", BMCUser: "root", BMCPassword: "calvin", PowerW: 10000})
	}
	for _, m := range fixtureMachines {
		rep, _ := json.Marshal(wire.Inventory{System: wire.System{Vendor: "Metalhall", Product: "HGX test"}, CPU: wire.CPU{Model: "EPYC 9654", Sockets: 2, Cores: 192},
			MemoryBytes: 2 << 40, GPUs: []wire.GPUGroup{{Model: "H100", Count: 8}}})
		if _, err := svc.Inventory().RecordInspection(ctx, m.name, rep); err != nil {
			t.Fatal(err)
		}
	}
	do("POST", "/api/v1/tenants/ta/assign", api.TenantAssign{Rack: "ra"})
	do("POST", "/api/v1/tenants/tb/assign", api.TenantAssign{Rack: "rb"})
	w.tech = w.token(t, "technician", "")
	w.tenantA = w.token(t, "tenant", "ta")
	w.tenantB = w.token(t, "tenant", "tb")
	return w
}

func (w *world) token(t *testing.T, role, tenant string) string {
	t.Helper()
	var out api.TokenCreated
	if err := w.admin.Do(context.Background(), "POST", "/api/v1/tokens", api.TokenCreate{Role: role, Tenant: tenant, Label: "console test"}, &out); err != nil {
		t.Fatal(err)
	}
	return out.Secret
}

// signIn is a plain HTTP client signed in with token; it follows no
// redirects, so the test sees each answer.
func (w *world) signIn(t *testing.T, token string) (*http.Client, *http.Response) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(w.url+"/ui/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in answered %s, want 303", resp.Status)
	}
	return c, resp
}

func (w *world) auditActions(t *testing.T, action string) int {
	t.Helper()
	var evs []struct {
		Action, Outcome string
	}
	if err := w.admin.Do(context.Background(), "GET", "/api/v1/audit", nil, &evs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if strings.EqualFold(e.Action, action) {
			n++
		}
	}
	return n
}
