package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/backup"
	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
	"github.com/metalhall/metalhall/provisioner"
)

// nopBMC accepts every command and reports power on.
type nopBMC struct{}

func (nopBMC) SetBootDevice(ctx context.Context, m *inventory.Machine, dev inventory.BootDevice, persistent bool) error {
	return nil
}
func (nopBMC) SetPower(ctx context.Context, m *inventory.Machine, action inventory.PowerAction) error {
	return nil
}
func (nopBMC) PowerState(ctx context.Context, m *inventory.Machine) (string, error) { return "on", nil }
func (nopBMC) EventLog(ctx context.Context, m *inventory.Machine) ([]bmc.Event, error) {
	return []bmc.Event{{ID: "1", Message: "BMC started"}}, nil
}
func (nopBMC) ClearEventLog(ctx context.Context, m *inventory.Machine) error { return nil }

// AttachConsole gives a console that prints a login prompt and hangs up.
func (nopBMC) AttachConsole(ctx context.Context, m *inventory.Machine, holder string, force bool) (io.ReadWriteCloser, error) {
	return &nopConsole{out: strings.NewReader(m.Name + " login: ")}, nil
}

type nopConsole struct{ out io.Reader }

func (c *nopConsole) Read(p []byte) (int, error)  { return c.out.Read(p) }
func (c *nopConsole) Write(p []byte) (int, error) { return len(p), nil }
func (c *nopConsole) Close() error                { return nil }

type fixture struct {
	t      *testing.T
	inv    *inventory.Store
	sealer *seal.Sealer
	srv    *Server
	http   *httptest.Server
	tokens map[string]string // admin, technician, tenant-a, tenant-b
	files  *httptest.Server  // serves an image for import-url
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// newFixture is a service with a site, hall h1 (phase 1 commissioning,
// phase 2 planned), tenants ta and tb, rack ra (ta) with machine ma, rack rb
// (tb) with machine mb, and an empty rack rempty.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	inv := must(inventory.Open(filepath.Join(t.TempDir(), "db"), inventory.Options{}))
	t.Cleanup(func() { inv.Close() })
	key := make([]byte, 32)
	rand.Read(key)
	sealer := must(seal.New(key))
	prov := must(provisioner.New(inv, nopBMC{}, provisioner.Config{TokenKey: key}))
	dataDir := t.TempDir()
	imgs := must(images.Open(filepath.Join(dataDir, "images"), inv, images.Options{NoSync: true, URLPolicy: images.URLPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}))
	profiles := provisioner.ProfileDir(filepath.Join(t.TempDir(), "profiles"))
	must(profiles.PutProfile(ctx, "hgx-h100", []byte(profileYAML)))
	must(profiles.PutProfile(ctx, "spare", []byte("min_disks: 1\n")))
	srv := must(New(Config{Store: inv, Sealer: sealer, Provisioner: prov, BMC: nopBMC{}, Images: imgs, Profiles: profiles,
		Backups: backup.NewSource(inv, dataDir, key, "test", nil)}))
	f := &fixture{t: t, inv: inv, sealer: sealer, srv: srv, tokens: map[string]string{}}
	f.http = httptest.NewServer(srv.Handler())
	t.Cleanup(f.http.Close)

	must(inv.CreateSite(ctx, inventory.Site{Name: "s1"}))
	must(inv.CreateHall(ctx, inventory.Hall{Name: "h1", Site: "s1"}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h1", Number: 1, BudgetW: 1_000_000}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h1", Number: 2, BudgetW: 1_000_000}))
	must(inv.SetPhaseState(ctx, "h1", 1, inventory.PhaseCommissioning))
	for _, tn := range []string{"ta", "tb"} {
		must(inv.CreateTenant(ctx, inventory.Tenant{Name: tn}))
	}
	for i, r := range []string{"ra", "rb", "rempty"} {
		must(inv.CreateRack(ctx, inventory.Rack{Name: r, Hall: "h1", Phase: 1, BudgetW: 44_000}))
		if r == "rempty" {
			continue
		}
		must(inv.EnrollMachine(ctx, inventory.Enrollment{Machine: inventory.Machine{Name: "m" + r[1:], Rack: r, Unit: 1,
			MACs: []string{fmt.Sprintf("52:54:00:00:00:%02x", i+1)}, PowerW: 10_200,
			BMC: inventory.BMC{Address: fmt.Sprintf("10.0.0.%d", i+1), Protocol: inventory.ProtocolIPMI, Username: "admin"}}}))
		must(inv.AssignRackTenant(ctx, r, "t"+r[1:]))
		must(inv.SetRackState(ctx, r, inventory.RackInstalled))
		for _, st := range []inventory.MachineState{inventory.MachineCommissioning, inventory.MachineAvailable} {
			must(inv.SetMachineState(ctx, "m"+r[1:], st, "", ""))
		}
	}
	for name, tenant := range map[string]string{"ubuntu-24.04": "", "ta-img": "ta", "tb-img": "tb"} {
		must(imgs.Import(ctx, strings.NewReader("an image called "+name), images.ImportOptions{Name: name, Tenant: tenant}))
	}
	f.files = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "downloaded image") }))
	t.Cleanup(f.files.Close)
	for name, p := range map[string][2]string{"admin": {"admin", ""}, "technician": {"technician", ""}, "tenant-a": {"tenant", "ta"}, "tenant-b": {"tenant", "tb"}} {
		secret, _, err := NewToken(ctx, inv, inventory.Role(p[0]), p[1], name)
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[name] = secret
	}
	return f
}

// do sends a request and returns the status and the body.
func (f *fixture) do(who, method, path string, body any) (int, []byte) {
	f.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		r = bytes.NewReader(must(json.Marshal(b)))
	}
	req := must(http.NewRequest(method, f.http.URL+path, r))
	if tok := f.tokens[who]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	} else if who != "" {
		req.Header.Set("Authorization", "Bearer "+who)
	}
	if strings.HasSuffix(path, "/racks/import") {
		req.Header.Set("Content-Type", "application/yaml")
	}
	if method == "PUT" && strings.HasSuffix(path, "/cabling") {
		req.Header.Set("Content-Type", "text/csv")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// profileYAML is the fixture's hgx-h100 profile.
const profileYAML = "gpu_model: H100\ngpu_count: 8\nos_disk: nvme0n1\n"

const manifestYAML = `rack:
  name: rnew
  hall: h1
  phase: 1
  units: 48
  power_kw: 44
machines:
  - name: gpu-rnew-01
    unit: 1
    height: 8
    macs: ["52:54:00:aa:00:01"]
    bmc: {address: 10.9.0.1, protocol: redfish, user: root, password: hunter2}
    power_w: 10200
`

// example is a request that succeeds for an admin, for every route.
func example(action string) (vars map[string]string, body any) {
	switch action {
	case "site.create":
		return nil, SiteCreate{Name: "s2"}
	case "hall.create":
		return nil, HallCreate{Name: "h2", Site: "s1"}
	case "hall.capacity", "phase.list":
		return map[string]string{"name": "h1"}, nil
	case "phase.create":
		return map[string]string{"name": "h1"}, PhaseCreate{Number: 3, PowerKW: 100}
	case "phase.set-state":
		return map[string]string{"name": "h1", "number": "2"}, StateChange{To: "commissioning"}
	case "rack.create":
		return nil, RackCreate{Name: "rc", Hall: "h1", Phase: 1, PowerKW: 10}
	case "rack.show":
		return map[string]string{"name": "ra"}, nil
	case "rack.set-state":
		return map[string]string{"name": "ra"}, StateChange{To: "maintenance"}
	case "rack.delete":
		return map[string]string{"name": "rempty"}, nil
	case "rack.import":
		return nil, manifestYAML
	case "rack.cabling-plan":
		return map[string]string{"name": "ra"}, "side_a_device,side_a_name,side_b_device,side_b_name\nma,ens3f0,leaf-01,Ethernet1\n"
	case "machine.enroll":
		return nil, MachineEnroll{Name: "m9", Rack: "rempty", Unit: 5, MACs: []string{"52:54:00:00:09:09"}, BMCAddress: "10.0.9.9",
			BMCProtocol: "redfish", BMCUser: "root", BMCPassword: "pw", PowerW: 1000}
	case "machine.show", "machine.events", "machine.delete":
		return map[string]string{"name": "ma"}, nil
	case "machine.erase-report", "machine.sel", "machine.sel-clear", "machine.console-log":
		return map[string]string{"name": "ma"}, nil
	case "machine.console":
		return map[string]string{"name": "ma"}, "root\r\n"
	case "machine.acceptance", "rack.acceptance", "rack.firmware", "rack.cabling":
		return map[string]string{"name": map[string]string{"machine.acceptance": "ma", "rack.acceptance": "ra", "rack.firmware": "ra", "rack.cabling": "ra"}[action]}, nil
	case "machine.maintenance":
		return map[string]string{"name": "ma"}, MaintenanceRequest{On: true, Reason: "DIMM"}
	case "subnet.create":
		return nil, SubnetCreate{Name: "prov", CIDR: "10.50.0.0/24", Gateway: "10.50.0.1", Range: "10.50.0.100-10.50.0.200"}
	case "tenant.create":
		return nil, TenantCreate{Name: "tc"}
	case "tenant.assign":
		return map[string]string{"name": "ta"}, TenantAssign{Rack: "rempty"}
	case "tenant.unassign":
		return map[string]string{"name": "ta"}, TenantAssign{Machine: "ma"}
	case "token.create":
		return nil, TokenCreate{Role: "technician", Label: "ci"}
	case "token.revoke":
		return map[string]string{"name": "TOKEN"}, nil
	case "machine.commission", "machine.job", "machine.cancel":
		return map[string]string{"name": "ma"}, nil
	case "machine.provision":
		return map[string]string{"name": "ma"}, ProvisionRequest{Image: "ubuntu-24.04", SSHKeys: []string{"ssh-ed25519 AAAA x"}}
	case "machine.release":
		return map[string]string{"name": "ma"}, ReleaseRequest{WipeMode: "full"}
	case "machine.boot-device":
		return map[string]string{"name": "ma"}, BootDeviceRequest{Device: "pxe"}
	case "machine.power":
		return map[string]string{"name": "ma"}, PowerRequest{Action: "status"}
	case "rack.update":
		row := "C"
		return map[string]string{"name": "ra"}, RackUpdate{Row: &row}
	case "phase.update":
		date := "2027-01-01"
		return map[string]string{"name": "h1", "number": "1"}, PhaseUpdate{TargetDate: &date}
	case "machine.update":
		profile := "hgx-h100"
		return map[string]string{"name": "ma"}, MachineUpdate{Profile: &profile}
	case "rack.commission":
		return map[string]string{"name": "ra"}, nil
	case "site.update":
		d := "campus"
		return map[string]string{"name": "s1"}, SiteUpdate{Description: &d}
	case "hall.update":
		site := "s1"
		return map[string]string{"name": "h1"}, HallUpdate{Site: &site}
	case "subnet.update":
		gw := "10.51.0.254"
		return map[string]string{"name": "sempty"}, SubnetUpdate{Gateway: &gw}
	case "tenant.update":
		d := "Tenant A, ops@ta.example"
		return map[string]string{"name": "ta"}, TenantUpdate{Description: &d}
	case "site.delete", "hall.delete", "subnet.delete", "tenant.delete":
		return map[string]string{"name": "sempty"}, nil
	case "phase.delete":
		return map[string]string{"name": "h1", "number": "2"}, nil
	case "profile.show":
		return map[string]string{"name": "hgx-h100"}, nil
	case "profile.validate":
		return nil, profileYAML
	case "profile.import":
		return map[string]string{"name": "hgx-h200"}, "gpu_model: H200\ngpu_count: 8\nos_disk: nvme0n1\n"
	case "profile.delete":
		return map[string]string{"name": "spare"}, nil
	case "image.show", "image.delete":
		return map[string]string{"name": "ta-img"}, nil
	case "image.import":
		return nil, "raw image bytes"
	case "image.import-url":
		return nil, ImageURLImport{Name: "fetched", URL: "FILES"}
	case "backup.archive":
		return nil, BackupRequest{Passphrase: "a passphrase for the tests"}
	}
	return nil, nil
}

func fill(pattern string, vars map[string]string) string {
	for k, v := range vars {
		pattern = strings.ReplaceAll(pattern, "{"+k+"}", v)
	}
	return pattern
}

func copyMap(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestTenantSeesOnlyItsOwn(t *testing.T) {
	f := newFixture(t)
	for path, want := range map[string]string{"/api/v1/machines": "ma", "/api/v1/racks": "ra"} {
		status, data := f.do("tenant-a", "GET", path, nil)
		var list []map[string]any
		if status != 200 || json.Unmarshal(data, &list) != nil {
			t.Fatalf("%s: %d %s", path, status, data)
		}
		if len(list) != 1 || list[0]["name"] != want {
			t.Fatalf("%s as tenant-a: %s", path, data)
		}
	}
	// Filtering by another tenant or its rack shows nothing of it: not
	// found, exactly as for a tenant or rack that does not exist.
	for _, tn := range []string{"tb", "no-such-tenant"} {
		if status, data := f.do("tenant-a", "GET", "/api/v1/machines?tenant="+tn, nil); status != 404 {
			t.Fatalf("tenant filter %s: %d %s", tn, status, data)
		}
	}
	if status, _ := f.do("tenant-a", "GET", "/api/v1/machines?rack=rb", nil); status != 404 {
		t.Fatalf("other tenant's rack filter: %d", status)
	}
	// Another tenant's machine looks exactly like one that does not exist.
	_, other := f.do("tenant-a", "GET", "/api/v1/machines/mb", nil)
	_, none := f.do("tenant-a", "GET", "/api/v1/machines/nosuch", nil)
	if strings.Replace(string(other), "mb", "X", 1) != strings.Replace(string(none), "nosuch", "X", 1) {
		t.Fatalf("other tenant's machine distinguishable:\n%s\n%s", other, none)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	f := newFixture(t)
	valid := MachineEnroll{Name: "m9", Rack: "rempty", Unit: 5, MACs: []string{"52:54:00:00:09:09"}, BMCAddress: "10.0.9.9",
		BMCProtocol: "redfish", BMCUser: "root", BMCPassword: "pw", PowerW: 1000}
	mutate := func(fn func(*MachineEnroll)) MachineEnroll { m := valid; fn(&m); return m }
	cases := []struct {
		name    string
		body    any
		status  int
		message string
	}{
		{"malformed JSON", `{"name": "m9",`, 400, "malformed JSON"},
		{"empty body", ``, 400, "empty"},
		{"unknown field", `{"name":"m9","colour":"red"}`, 400, `unknown field "colour"`},
		{"wrong type", `{"name":"m9","unit":"five"}`, 400, `field "unit" must be int`},
		{"trailing data", `{"name":"m9"} {"x":1}`, 400, "after the JSON object"},
		{"oversized", `{"name":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "larger than"},
		{"bad MAC", mutate(func(m *MachineEnroll) { m.MACs = []string{"52:54:00:zz"} }), 400, "not an Ethernet MAC"},
		{"bad unit", mutate(func(m *MachineEnroll) { m.Unit = 0 }), 400, "unit"},
		{"unit past top", mutate(func(m *MachineEnroll) { m.Unit = 48; m.Height = 2 }), 409, "do not fit"},
		{"bad protocol", mutate(func(m *MachineEnroll) { m.BMCProtocol = "snmp" }), 400, "ipmi or redfish"},
		{"no password", mutate(func(m *MachineEnroll) { m.BMCPassword = "" }), 400, "bmc_password"},
		{"taken MAC", mutate(func(m *MachineEnroll) { m.MACs = []string{"52:54:00:00:00:01"} }), 409, `belongs to machine "ma"`},
	}
	before := must(f.inv.Machines(context.Background(), inventory.MachineFilter{}))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, data := f.do("admin", "POST", "/api/v1/machines", c.body)
			var e Error
			json.Unmarshal(data, &e)
			if status != c.status || !strings.Contains(e.Message, c.message) {
				t.Fatalf("%d %q, want %d containing %q", status, e.Message, c.status, c.message)
			}
		})
	}
	if after := must(f.inv.Machines(context.Background(), inventory.MachineFilter{})); len(after) != len(before) {
		t.Fatalf("bad input changed the machines: %d → %d", len(before), len(after))
	}
	for _, c := range []struct{ path, body, msg string }{
		{"/api/v1/subnets", `{"name":"x","cidr":"10.0.0.0/33","gateway":"10.0.0.1"}`, "not an IPv4 CIDR"},
		{"/api/v1/subnets", `{"name":"x","cidr":"10.0.0.0/24","gateway":"10.0.0.1","range":"10.0.0.9"}`, "FIRST-LAST"},
		{"/api/v1/halls/h1/phases", `{"number":4,"power_kw":-5}`, "power_kw"},
		{"/api/v1/racks", `{"name":"bad name","hall":"h1","phase":1}`, "not a valid name"},
	} {
		status, data := f.do("admin", "POST", c.path, c.body)
		if status != 400 || !strings.Contains(string(data), c.msg) {
			t.Errorf("POST %s %s: %d %s", c.path, c.body, status, data)
		}
	}
	if subs := must(f.inv.Subnets(context.Background())); len(subs) != 0 {
		t.Fatal("bad subnet stored")
	}
}

func TestManifestImport(t *testing.T) {
	f := newFixture(t)
	status, data := f.do("technician", "POST", "/api/v1/racks/import", manifestYAML)
	if status != 200 {
		t.Fatalf("%d %s", status, data)
	}
	// The password is sealed, bound to the machine, and opens with the key.
	m := must(f.inv.Machine(context.Background(), "gpu-rnew-01"))
	sealed := must(f.inv.Secret(context.Background(), m.BMC.SecretRef))
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("password stored in clear")
	}
	if pw := must(f.sealer.Open(sealed, []byte("bmc/gpu-rnew-01"))); string(pw) != "hunter2" {
		t.Fatalf("unsealed %q", pw)
	}
	// Idempotent.
	status, data = f.do("technician", "POST", "/api/v1/racks/import", manifestYAML)
	var res inventory.ImportResult
	json.Unmarshal(data, &res)
	if status != 200 || len(res.Created) != 0 || len(res.Unchanged) != 1 {
		t.Fatalf("re-import: %d %s", status, data)
	}
	// Errors point at the line and field; nothing lands.
	bad := strings.Replace(manifestYAML, "rnew", "rbad", -1)
	bad = strings.Replace(bad, "52:54:00:aa:00:01", "52:54:00:aa:00:0g", 1)
	status, data = f.do("technician", "POST", "/api/v1/racks/import", bad)
	if status != 400 || !strings.Contains(string(data), "manifest line 8, machine 1") || !strings.Contains(string(data), "0g") {
		t.Fatalf("bad MAC: %d %s", status, data)
	}
	status, data = f.do("technician", "POST", "/api/v1/racks/import", strings.Replace(manifestYAML, "height: 8", "hieght: 8", 1))
	if status != 400 || !strings.Contains(string(data), "line 10") || !strings.Contains(string(data), "hieght") {
		t.Fatalf("unknown field: %d %s", status, data)
	}
	// CSV, and a placement refusal that names the CSV line.
	csv := strings.Join(csvColumns, ",") + "\n" +
		"rcsv,h1,1,B,48,20,gpu-c1,1,8,52:54:00:cc:00:01,10.8.0.1,ipmi,admin,pw,10200,hgx-h100,\n" +
		"rcsv,h1,1,B,48,20,gpu-c2,9,8,52:54:00:cc:00:02,10.8.0.2,ipmi,admin,pw,10200,hgx-h100,\n"
	req := must(http.NewRequest("POST", f.http.URL+"/api/v1/racks/import", strings.NewReader(csv)))
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Authorization", "Bearer "+f.tokens["admin"])
	resp := must(http.DefaultClient.Do(req))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 409 || !strings.Contains(string(body), "manifest line 3, machine 2") || !strings.Contains(string(body), "20 kW") {
		t.Fatalf("csv over budget: %d %s", resp.StatusCode, body)
	}
	if _, err := f.inv.Rack(context.Background(), "rcsv"); err == nil {
		t.Fatal("refused CSV import left its rack behind")
	}
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	f := newFixture(t)
	status, data := f.do("", "GET", "/api/v1/openapi.json", nil)
	if status != 200 {
		t.Fatal(status)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string         `json:"operationId"`
			RequestBody map[string]any `json:"requestBody"`
		} `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	// Every documented operation is served: the mux answers it with
	// something other than its own 404 or 405 (without a token, 401).
	// Every other method on a documented path is not served: an operation
	// the mux serves but the document lacks would answer here.
	muxMiss := func(status int, data []byte) bool {
		var e Error
		json.Unmarshal(data, &e)
		return status == http.StatusMethodNotAllowed || (status == http.StatusNotFound && strings.HasPrefix(e.Message, "no API route"))
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		concrete := pathParam.ReplaceAllString(path, "x")
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			_, ok := ops[strings.ToLower(method)]
			status, data := f.do("", method, concrete, nil)
			switch {
			case ok && muxMiss(status, data):
				t.Errorf("openapi.json documents %s %s but the service does not serve it: %d %s", method, path, status, data)
			case !ok && !muxMiss(status, data) && !documentedFor(doc.Paths, method, concrete):
				t.Errorf("the service serves %s %s (%d) but openapi.json does not document it", method, concrete, status)
			}
			if ok {
				documented[method+" "+path] = true
			}
		}
	}
	// The hand-written authorization table lists every route there is
	// (TestAuthorizationTable): each is documented.
	for _, row := range readAuthzTable(t) {
		if !documented[row.method+" "+row.pattern] {
			t.Errorf("%s %s (%s:%d) missing from openapi.json", row.method, row.pattern, authzTable, row.line)
		}
	}
	for _, rt := range f.srv.routes {
		op := doc.Paths[rt.pattern][strings.ToLower(rt.method)]
		if op.OperationID != rt.action {
			t.Errorf("%s %s: operationId %q, want %q", rt.method, rt.pattern, op.OperationID, rt.action)
		}
		if (rt.body != nil) != (op.RequestBody != nil) {
			t.Errorf("%s: request body documented %v, route takes one %v", rt.action, op.RequestBody != nil, rt.body != nil)
		}
	}
	// Every field of a request type is in its schema.
	props := doc.Components.Schemas["MachineEnroll"].Properties
	for _, field := range []string{"name", "rack", "unit", "macs", "bmc_address", "bmc_protocol", "bmc_user", "bmc_password", "power_w"} {
		if _, ok := props[field]; !ok {
			t.Errorf("MachineEnroll schema lacks %q", field)
		}
	}
}

// documentedFor reports whether a documented pattern of the method matches
// path (GET /api/v1/racks/import is GET /api/v1/racks/{name}).
func documentedFor[Op any](paths map[string]map[string]Op, method, path string) bool {
	got := strings.Split(path, "/")
	for pattern, ops := range paths {
		if _, ok := ops[strings.ToLower(method)]; !ok {
			continue
		}
		want := strings.Split(pattern, "/")
		if len(want) != len(got) {
			continue
		}
		match := true
		for i := range want {
			if want[i] != got[i] && !pathParam.MatchString(want[i]) {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

func TestHealthAndMetrics(t *testing.T) {
	f := newFixture(t)
	if status, data := f.do("", "GET", "/healthz", nil); status != 200 || !strings.Contains(string(data), "ok") {
		t.Fatalf("healthz %d %s", status, data)
	}
	f.do("admin", "GET", "/api/v1/machines", nil)
	if err := f.inv.RecordBMCStatus(context.Background(), "ma", inventory.BMCStatus{Power: "on", Reachable: true, Outcome: "ok", ConsumedW: 9800, ReadAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	status, data := f.do("", "GET", "/metrics", nil)
	for _, want := range []string{
		`metalhall_api_requests_total{code="200",route="/api/v1/machines"} 1`,
		`metalhall_machines{state="available"} 2`,
		`metalhall_racks{state="installed"} 2`,
		`metalhall_machines_bmc_outcome{outcome="ok"} 1`,
		`metalhall_machines_bmc_outcome{outcome="unknown"} 1`,
		`metalhall_rack_measured_watts{rack="ra"} 9800`,
		`metalhall_rack_budget_watts{rack="ra"} 44000`,
		`metalhall_api_request_duration_seconds_bucket`,
	} {
		if status != 200 || !strings.Contains(string(data), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestTokensAreShownOnceAndRevocable(t *testing.T) {
	f := newFixture(t)
	status, data := f.do("admin", "POST", "/api/v1/tokens", TokenCreate{Role: "tenant", Tenant: "ta", Label: "bank ops"})
	var created TokenCreated
	if status != 201 || json.Unmarshal(data, &created) != nil || !strings.HasPrefix(created.Secret, "mh_") {
		t.Fatalf("%d %s", status, data)
	}
	f.tokens["new"] = created.Secret
	if status, _ := f.do("new", "GET", "/api/v1/machines", nil); status != 200 {
		t.Fatalf("new token: %d", status)
	}
	_, list := f.do("admin", "GET", "/api/v1/tokens", nil)
	if strings.Contains(string(list), created.Secret[20:]) || strings.Contains(string(list), "hash") {
		t.Fatalf("token list leaks secrets: %s", list)
	}
	if status, _ := f.do("admin", "DELETE", "/api/v1/tokens/"+created.ID, nil); status != 200 {
		t.Fatal(status)
	}
	if status, _ := f.do("new", "GET", "/api/v1/machines", nil); status != 401 {
		t.Fatalf("revoked token: %d", status)
	}
	// A token with the right ID and a wrong secret is refused.
	forged := created.Secret[:len(created.Secret)-4] + "AAAA"
	if status, _ := f.do(forged, "GET", "/api/v1/machines", nil); status != 401 {
		t.Fatalf("forged token: %d", status)
	}
}

// TestPowerOnPastTheRackBudgetIsRefusedUnlessStaffForceIt: the
// energisation interlock, judged by measured draw.
func TestPowerOnPastTheRackBudgetIsRefusedUnlessStaffForceIt(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// An unrated machine in rack ra (44 kW) drawing 40 kW.
	must(f.inv.EnrollMachine(ctx, inventory.Enrollment{Machine: inventory.Machine{Name: "mx", Rack: "ra", Unit: 10,
		MACs: []string{"52:54:00:00:0a:0a"}, BMC: inventory.BMC{Address: "10.0.9.10", Protocol: inventory.ProtocolIPMI, Username: "admin"}}}))
	if err := f.inv.RecordBMCStatus(ctx, "mx", inventory.BMCStatus{Power: "on", Reachable: true, Outcome: "ok", ConsumedW: 40_000, ReadAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	status, data := f.do("tenant-a", "POST", "/api/v1/machines/ma/power", PowerRequest{Action: "on"})
	if status != http.StatusConflict || !strings.Contains(string(data), "rack ra would draw 50.2 kW of its 44 kW budget (over by 6.2 kW)") {
		t.Fatalf("power on past the budget: %d %s", status, data)
	}
	if status, data := f.do("tenant-a", "POST", "/api/v1/machines/ma/power", PowerRequest{Action: "on", Force: true}); status != http.StatusForbidden {
		t.Fatalf("a tenant forced it: %d %s", status, data)
	}
	if status, data := f.do("technician", "POST", "/api/v1/machines/ma/power", PowerRequest{Action: "on", Force: true}); status != http.StatusAccepted {
		t.Fatalf("staff could not force it: %d %s", status, data)
	}
	// Powering off is never refused.
	if status, data := f.do("tenant-a", "POST", "/api/v1/machines/mx/power", PowerRequest{Action: "off"}); status == http.StatusConflict {
		t.Fatalf("power off refused: %d %s", status, data)
	}
}
