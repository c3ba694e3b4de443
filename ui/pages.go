package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

func (u *UI) routes() {
	u.mux.HandleFunc("GET /ui/{$}", u.home)
	u.mux.HandleFunc("GET /ui/login", u.loginPage)
	u.mux.HandleFunc("POST /ui/login", u.login)
	u.mux.HandleFunc("POST /ui/logout", u.state(u.logout))
	u.mux.HandleFunc("GET /ui/site", u.page(u.sitePage))
	u.mux.HandleFunc("GET /ui/halls/{name}", u.page(u.hallPage))
	u.mux.HandleFunc("GET /ui/racks", u.page(u.racksPage))
	u.mux.HandleFunc("GET /ui/racks/{name}", u.page(u.rackPage))
	u.mux.HandleFunc("GET /ui/machines/{name}", u.page(u.machinePage))
	u.mux.HandleFunc("POST /ui/machines/{name}/{action}", u.state(u.machineAction))
	u.mux.HandleFunc("GET /ui/jobs", u.page(u.jobsPage))
	u.mux.HandleFunc("GET /ui/images", u.page(u.imagesPage))
	u.mux.HandleFunc("GET /ui/audit", u.page(u.auditPage))
	u.mux.HandleFunc("GET /ui/tokens", u.page(u.tokensPage))
	u.mux.HandleFunc("GET /ui/live", u.liveStream)
	u.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		u.render(w, r, http.StatusNotFound, "error", &view{Title: "Not found", S: u.session(r),
			Data: errorView{Status: http.StatusNotFound, Message: "There is no such page."}})
	})
}

// view is what every page template gets.
type view struct {
	Title string
	S     *session
	Nav   string // the nav entry to mark current
	Live  string // the live stream's query, when the page follows one
	Data  any
}

func (v *view) CSRF() string {
	if v.S == nil {
		return ""
	}
	return v.S.csrf
}

type errorView struct {
	Status  int
	Message string
}

// page wraps a page handler: no session → the sign-in page; an API error →
// its page (a tenant's 404 for another tenant's machine is the same page as
// a machine that does not exist).
func (u *UI) page(h func(r *http.Request, s *session) (string, *view, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := u.session(r)
		if s == nil {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		name, v, err := h(r, s)
		if err != nil {
			u.fail(w, r, s, err)
			return
		}
		v.S = s
		u.render(w, r, http.StatusOK, name, v)
	}
}

func (u *UI) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	code := status(err)
	if code == http.StatusUnauthorized { // the token was revoked or expired
		u.close(s)
		u.setCookie(w, r, nil)
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	msg := "Something went wrong; the service log says more."
	var ae *APIError
	switch {
	case code == http.StatusNotFound:
		msg = "There is no such page." // never says whose it is
	case errors.As(err, &ae):
		msg = ae.Message
	default:
		u.log.Error("console page", "path", r.URL.Path, "err", err)
	}
	u.render(w, r, code, "error", &view{Title: http.StatusText(code), S: s, Data: errorView{Status: code, Message: msg}})
}

// state wraps a state change: it needs a session and the session's CSRF
// token, or nothing happens.
func (u *UI) state(h func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, api.DefaultMaxBody)
		s := u.session(r)
		if s == nil {
			writeResult(w, http.StatusUnauthorized, "not signed in: sign in again at /ui/login")
			return
		}
		if !csrfOK(r, s) {
			writeResult(w, http.StatusForbidden, "the request carries no valid CSRF token: reload the page and try again")
			return
		}
		h(w, r, s)
	}
}

// result is what a state change answers the console's script.
type result struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

func writeResult(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(result{OK: code < 400, Message: msg})
}

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	s := u.session(r)
	switch {
	case s == nil:
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	case s.Staff():
		http.Redirect(w, r, "/ui/site", http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/ui/racks", http.StatusSeeOther)
	}
}

type loginView struct {
	Next, Error string
}

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, r, http.StatusOK, "login", &view{Title: "Sign in", Data: loginView{Next: safeNext(r.URL.Query().Get("next"))}})
}

// safeNext keeps a post-sign-in redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return ""
	}
	return next
}

// login exchanges a token for a session. The API says whether the token
// is good (and audits a bad one); the console only remembers the answer.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	again := func(code int, msg string) {
		u.render(w, r, code, "login", &view{Title: "Sign in", Data: loginView{Next: next, Error: msg}})
	}
	if token == "" {
		again(http.StatusBadRequest, "Paste an API token (mh_…) to sign in.")
		return
	}
	var who api.WhoAmI
	if err := u.call(r.Context(), token, http.MethodGet, "/api/v1/whoami", nil, &who); err != nil {
		if status(err) == http.StatusUnauthorized {
			again(http.StatusUnauthorized, "That token is not valid (mistyped, revoked or expired). Ask an admin for a token.")
			return
		}
		u.log.Error("console sign-in", "err", err)
		again(http.StatusInternalServerError, "Signing in failed; the service log says more.")
		return
	}
	s, err := u.open(token, who)
	if err != nil {
		again(http.StatusServiceUnavailable, err.Error())
		return
	}
	u.setCookie(w, r, s)
	if next == "" {
		next = Prefix
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request, s *session) {
	u.close(s)
	u.setCookie(w, r, nil)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// siteView: sites → halls → phases.
type siteView struct {
	Sites []siteRow
}

type siteRow struct {
	inventory.Site
	Halls []hallRow
}

type hallRow struct {
	inventory.Hall
	Capacity *inventory.HallCapacity
	Measured map[int]measured // by phase number
}

func (u *UI) sitePage(r *http.Request, s *session) (string, *view, error) {
	ctx := r.Context()
	var sites []inventory.Site
	if err := u.get(ctx, s, "/api/v1/sites", nil, &sites); err != nil {
		return "", nil, err
	}
	var halls []inventory.Hall
	if err := u.get(ctx, s, "/api/v1/halls", nil, &halls); err != nil {
		return "", nil, err
	}
	v := siteView{}
	for _, st := range sites {
		row := siteRow{Site: st}
		for _, h := range halls {
			if h.Site != st.Name {
				continue
			}
			hr := hallRow{Hall: h}
			if err := u.get(ctx, s, "/api/v1/halls/"+url.PathEscape(h.Name)+"/capacity", nil, &hr.Capacity); err != nil {
				return "", nil, err
			}
			m, err := u.measuredByPhase(r, s, h.Name)
			if err != nil {
				return "", nil, err
			}
			hr.Measured = m
			row.Halls = append(row.Halls, hr)
		}
		v.Sites = append(v.Sites, row)
	}
	return "site", &view{Title: "Site", Nav: "site", Data: v}, nil
}

// hallView is the hall floor: racks by row.
type hallView struct {
	Hall     string
	Rows     []floorRow
	Machines int
}

type floorRow struct {
	Row   string
	Racks []floorRack
}

type floorRack struct {
	inventory.Rack
	InstalledW int64
	Measured   measured
	Machines   []api.Machine
}

func (u *UI) hallPage(r *http.Request, s *session) (string, *view, error) {
	hall := r.PathValue("name")
	v, err := u.hallFloor(r, s, hall)
	if err != nil {
		return "", nil, err
	}
	return "hall", &view{Title: "Hall " + hall, Nav: "site", Live: "hall=" + url.QueryEscape(hall), Data: v}, nil
}

// hallFloor reads a hall's racks and machines in two API calls, whatever
// its size, and lays them out by row.
func (u *UI) hallFloor(r *http.Request, s *session, hall string) (*hallView, error) {
	ctx := r.Context()
	var racks []inventory.Rack
	if err := u.get(ctx, s, "/api/v1/racks", url.Values{"hall": {hall}}, &racks); err != nil {
		return nil, err
	}
	if len(racks) == 0 { // an unknown hall, or one this token sees nothing of
		var cap inventory.HallCapacity
		if err := u.get(ctx, s, "/api/v1/halls/"+url.PathEscape(hall)+"/capacity", nil, &cap); err != nil {
			return nil, err
		}
	}
	var ms []api.Machine
	if err := u.get(ctx, s, "/api/v1/machines", url.Values{"hall": {hall}}, &ms); err != nil {
		return nil, err
	}
	byRack := map[string][]api.Machine{}
	for _, m := range ms {
		byRack[m.Rack] = append(byRack[m.Rack], m)
	}
	rows := map[string]*floorRow{}
	var order []string
	for _, rk := range racks {
		key := rk.Row
		if key == "" {
			key = "—"
		}
		fr := rows[key]
		if fr == nil {
			fr = &floorRow{Row: key}
			rows[key] = fr
			order = append(order, key)
		}
		f := floorRack{Rack: rk, Machines: byRack[rk.Name], Measured: measured{now: u.cfg.Now()}}
		sort.Slice(f.Machines, func(i, j int) bool { return f.Machines[i].Unit > f.Machines[j].Unit })
		for i := range f.Machines {
			f.InstalledW += f.Machines[i].PowerW
			f.Measured.add(&f.Machines[i])
		}
		fr.Racks = append(fr.Racks, f)
	}
	sort.Strings(order)
	v := &hallView{Hall: hall, Machines: len(ms)}
	for _, k := range order {
		v.Rows = append(v.Rows, *rows[k])
	}
	return v, nil
}

type racksView struct {
	Racks []inventory.Rack
}

func (u *UI) racksPage(r *http.Request, s *session) (string, *view, error) {
	var racks []inventory.Rack
	if err := u.get(r.Context(), s, "/api/v1/racks", nil, &racks); err != nil {
		return "", nil, err
	}
	return "racks", &view{Title: "Racks", Nav: "racks", Data: racksView{Racks: racks}}, nil
}

// Rack elevation geometry, in SVG user units.
const (
	unitPx    = 24
	rackWidth = 460
	railPx    = 36
)

type rackView struct {
	Detail   api.RackDetail
	Measured measured
	Readings map[string]string // machine → its reading, in words
	Units    []elevUnit
	Boxes    []elevBox
	Height   int
	Width    int
}

type elevUnit struct {
	U, Y int
}

type elevBox struct {
	api.Machine
	Y, H int
	GPU  string
}

func (u *UI) rackPage(r *http.Request, s *session) (string, *view, error) {
	name := r.PathValue("name")
	var d api.RackDetail
	if err := u.get(r.Context(), s, "/api/v1/racks/"+url.PathEscape(name), nil, &d); err != nil {
		return "", nil, err
	}
	v := elevation(d)
	v.Measured, v.Readings = measured{now: u.cfg.Now()}, map[string]string{}
	for i := range d.Machines {
		v.Measured.add(&d.Machines[i])
		v.Readings[d.Machines[i].Name] = machineReading(u.cfg.Now(), &d.Machines[i])
	}
	return "rack", &view{Title: "Rack " + name, Nav: "racks", Live: "rack=" + url.QueryEscape(name), Data: v}, nil
}

// elevation lays a rack out as drawn in a data-centre: U1 at the bottom.
func elevation(d api.RackDetail) rackView {
	units := max(d.Units, 1)
	v := rackView{Detail: d, Height: units * unitPx, Width: rackWidth}
	for n := units; n >= 1; n-- {
		v.Units = append(v.Units, elevUnit{U: n, Y: (units - n) * unitPx})
	}
	for _, m := range d.Machines {
		h := max(m.Height, 1)
		top := m.Unit + h - 1
		v.Boxes = append(v.Boxes, elevBox{Machine: m, Y: (units - top) * unitPx, H: h * unitPx, GPU: gpuModel(m.Inspection)})
	}
	return v
}

// gpuModel summarises an inspection's GPUs ("8 × H100"), or "".
func gpuModel(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var inv wire.Inventory
	if json.Unmarshal(raw, &inv) != nil {
		return ""
	}
	var parts []string
	for _, g := range inv.GPUs {
		parts = append(parts, fmt.Sprintf("%d × %s", g.Count, g.Model))
	}
	return strings.Join(parts, ", ")
}

type machineView struct {
	M          api.Machine
	Inv        *wire.Inventory
	GPU        string
	Job        *api.Job
	Events     []inventory.Event
	Images     []api.Image
	PowerState string
}

func (u *UI) machinePage(r *http.Request, s *session) (string, *view, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	base := "/api/v1/machines/" + url.PathEscape(name)
	var v machineView
	if err := u.get(ctx, s, base, nil, &v.M); err != nil {
		return "", nil, err
	}
	if len(v.M.Inspection) > 0 {
		var inv wire.Inventory
		if json.Unmarshal(v.M.Inspection, &inv) == nil {
			v.Inv = &inv
		}
	}
	v.GPU = gpuModel(v.M.Inspection)
	if err := u.get(ctx, s, base+"/events", nil, &v.Events); err != nil {
		return "", nil, err
	}
	// Only a machine with job events has a job to ask for (see machineReader).
	if slices.ContainsFunc(v.Events, isJobEvent) {
		var job api.Job
		if err := u.get(ctx, s, base+"/job", nil, &job); err == nil {
			v.Job = &job
		} else if status(err) != http.StatusNotFound {
			return "", nil, err
		}
	}
	slices.Reverse(v.Events) // newest first
	if len(v.Events) > 200 {
		v.Events = v.Events[:200]
	}
	if err := u.get(ctx, s, "/api/v1/images", nil, &v.Images); err != nil && status(err) != http.StatusServiceUnavailable {
		return "", nil, err
	}
	return "machine", &view{Title: "Machine " + name, Nav: "racks", Live: "machine=" + url.QueryEscape(name), Data: v}, nil
}

// machineAction turns a console form into the API request of the same
// name. The API decides whether this session's token may do it.
func (u *UI) machineAction(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	base := "/api/v1/machines/" + url.PathEscape(name)
	var (
		path = base + "/" + r.PathValue("action")
		body any
		done string
	)
	switch r.PathValue("action") {
	case "power":
		a := r.PostFormValue("action")
		body, done = api.PowerRequest{Action: a}, fmt.Sprintf("power %s requested for %s", a, name)
	case "boot-device":
		d := r.PostFormValue("device")
		body, done = api.BootDeviceRequest{Device: d}, fmt.Sprintf("%s boots from %s next", name, d)
	case "provision":
		var keys []string
		for _, l := range strings.Split(r.PostFormValue("ssh_keys"), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				keys = append(keys, l)
			}
		}
		img := r.PostFormValue("image")
		body, done = api.ProvisionRequest{Image: img, SSHKeys: keys, UserData: r.PostFormValue("user_data")},
			fmt.Sprintf("reimaging %s with %s", name, img)
	case "release":
		body, done = api.ReleaseRequest{}, fmt.Sprintf("releasing %s: it is wiped, then available again", name)
	case "commission":
		done = fmt.Sprintf("commissioning %s", name)
	default:
		writeResult(w, http.StatusNotFound, fmt.Sprintf("there is no machine action %q", r.PathValue("action")))
		return
	}
	err := u.call(r.Context(), s.token, http.MethodPost, path, body, nil)
	if err != nil {
		code, msg := status(err), err.Error()
		var ae *APIError
		if errors.As(err, &ae) {
			msg = ae.Message
		}
		if code == http.StatusNotFound {
			msg = "There is no such machine."
		}
		if code >= 500 && ae == nil {
			u.log.Error("console action", "path", path, "err", err)
			msg = "the action failed; the service log says more"
		}
		if !wantsJSON(r) {
			u.fail(w, r, s, err)
			return
		}
		writeResult(w, code, msg)
		return
	}
	if !wantsJSON(r) { // a browser without our script: back to the page
		http.Redirect(w, r, "/ui/machines/"+url.PathEscape(name), http.StatusSeeOther)
		return
	}
	writeResult(w, http.StatusOK, done)
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

type jobsView struct {
	Running, Queued []*api.Job
}

// jobsPage lists the jobs queued and running, every kind (power jobs
// too), from the API's job list: the queue is the provisioner's, in the
// order it runs it.
func (u *UI) jobsPage(r *http.Request, s *session) (string, *view, error) {
	var jobs []api.Job
	if err := u.get(r.Context(), s, "/api/v1/jobs", nil, &jobs); err != nil {
		return "", nil, err
	}
	var v jobsView
	for i := range jobs {
		j := &jobs[i]
		switch j.State {
		case inventory.JobQueued:
			v.Queued = append(v.Queued, j)
		case inventory.JobRunning:
			v.Running = append(v.Running, j)
		}
	}
	sort.SliceStable(v.Queued, func(i, j int) bool { return v.Queued[i].QueuePosition < v.Queued[j].QueuePosition })
	sort.SliceStable(v.Running, func(i, j int) bool { return v.Running[i].CreatedAt.Before(v.Running[j].CreatedAt) })
	return "jobs", &view{Title: "Jobs", Nav: "jobs", Live: "jobs=1", Data: v}, nil
}

func (u *UI) imagesPage(r *http.Request, s *session) (string, *view, error) {
	var imgs []api.Image
	if err := u.get(r.Context(), s, "/api/v1/images", nil, &imgs); err != nil {
		return "", nil, err
	}
	return "images", &view{Title: "Images", Nav: "images", Data: imgs}, nil
}

type auditView struct {
	Actor, Since, Action, Subject, Outcome string
	Events                                 []inventory.Event
	Total                                  int
}

const auditShown = 500

// auditPage filters by actor and time in the API, and by action, subject
// and outcome here (display only: the API has already said who may read).
func (u *UI) auditPage(r *http.Request, s *session) (string, *view, error) {
	q := r.URL.Query()
	v := auditView{Actor: q.Get("actor"), Since: q.Get("since"), Action: q.Get("action"), Subject: q.Get("subject"), Outcome: q.Get("outcome")}
	aq := url.Values{}
	if v.Actor != "" {
		aq.Set("actor", v.Actor)
	}
	if v.Since != "" {
		aq.Set("since", v.Since)
	}
	var evs []inventory.Event
	if err := u.get(r.Context(), s, "/api/v1/audit", aq, &evs); err != nil {
		return "", nil, err
	}
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		if (v.Action != "" && !strings.Contains(e.Action, v.Action)) || (v.Subject != "" && !strings.Contains(e.Subject, v.Subject)) ||
			(v.Outcome != "" && e.Outcome != v.Outcome) {
			continue
		}
		v.Total++
		if len(v.Events) < auditShown {
			v.Events = append(v.Events, e)
		}
	}
	return "audit", &view{Title: "Audit", Nav: "audit", Data: v}, nil
}

type tokensView struct {
	Tenants []inventory.Tenant
	Tokens  []api.Token
}

func (u *UI) tokensPage(r *http.Request, s *session) (string, *view, error) {
	var v tokensView
	if err := u.get(r.Context(), s, "/api/v1/tenants", nil, &v.Tenants); err != nil {
		return "", nil, err
	}
	if err := u.get(r.Context(), s, "/api/v1/tokens", nil, &v.Tokens); err != nil {
		return "", nil, err
	}
	return "tokens", &view{Title: "Tenants and tokens", Nav: "tokens", Data: v}, nil
}

// render writes a page; a template error after the header is only logged.
func (u *UI) render(w http.ResponseWriter, r *http.Request, code int, name string, v *view) {
	t := u.pages[name]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := t.ExecuteTemplate(w, "layout", v); err != nil {
		u.log.Error("console template", "page", name, "err", err)
	}
}

var funcs = template.FuncMap{
	"kw": kw,
	"pct": func(a, b int64) int64 {
		if b <= 0 {
			return 0
		}
		return min(a*100/b, 100)
	},
	"gib": func(b int64) string { return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30)) },
	"stepsDone": func(j *api.Job) int {
		n := 0
		for _, s := range j.Steps {
			if s.State == inventory.StepDone {
				n++
			}
		}
		return n
	},
	"currentStep": func(j *api.Job) string {
		if i := j.CurrentStep(); i < len(j.Steps) {
			return j.Steps[i].Name
		}
		return "—"
	},
	"add":      func(a, b int) int { return a + b },
	"mid":      func(y, h int) int { return y + h/2 },
	"states":   inventory.MachineStates,
	"outcomes": func() []string { return []string{"ok", "refused", "failed"} },
}

func (u *UI) parseTemplates() error {
	u.pages = map[string]*template.Template{}
	base, err := template.New("").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return err
	}
	for _, p := range []string{"login", "error", "site", "hall", "racks", "rack", "machine", "jobs", "images", "audit", "tokens"} {
		t, err := template.Must(base.Clone()).ParseFS(assets, "templates/"+p+".html")
		if err != nil {
			return fmt.Errorf("console template %s: %w", p, err)
		}
		u.pages[p] = t
	}
	return nil
}
