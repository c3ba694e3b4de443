package ui_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/metalhall/metalhall/inventory"
)

// browser starts Debian's chromium, headless, for one test. Screenshots go
// to $UI_SCREENSHOTS when set (how docs/ui/ is refreshed), else to a
// temporary directory.
func browser(t *testing.T) (context.Context, func(name string)) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts chromium: skipped in -short mode")
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (Debian package chromium; make test installs it)")
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 1000),
		chromedp.Flag("no-proxy-server", true), chromedp.Flag("disable-gpu", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	// A bound for the whole test, not a timed assertion: nothing below
	// waits on a clock, only on what the page shows.
	ctx, cancelC := context.WithTimeout(ctx, testTimeout)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	dir := os.Getenv("UI_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ctx, shot
}

func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// testTimeout bounds a browser test as a whole; it asserts nothing.
const testTimeout = 3 * time.Minute

// get runs one action that answers a value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// until waits, without a clock, for a predicate to hold on the page: on
// every DOM change (the test's context bounds the whole test).
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(0))
}

func signInBrowser(t *testing.T, ctx context.Context, w *world, token, landing string) {
	t.Helper()
	run(t, ctx, "sign in",
		chromedp.Navigate(w.url+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.CSS(`nav`)))
	loc := get(t, ctx, "location", chromedp.Location())
	if !strings.HasSuffix(loc, landing) {
		t.Fatalf("signed in at %s, want %s", loc, landing)
	}
}

// checkLabels fails when a visible control of the page has no accessible
// name: every input, select and textarea a label, every link and button
// words or an aria-label.
func checkLabels(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	unlabelled := get(t, ctx, "labels on "+page, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('input:not([type=hidden]),select,textarea,a,button'))
		.filter(el => el.getClientRects().length > 0 || el.closest('svg'))
		.filter(el => {
			if (el.getAttribute('aria-label')) return false;
			if (el.labels && el.labels.length) return false;
			if (/^(A|BUTTON)$/i.test(el.tagName) && el.textContent.trim() !== '') return false;
			return true;
		}).map(el => el.outerHTML.slice(0, 120))`))
	if len(unlabelled) > 0 {
		t.Errorf("%s: controls without a label: %q", page, unlabelled)
	}
}

func TestTechnicianFindsRackAndPowersMachineLive(t *testing.T) {
	w := newWorld(t)
	// ma1's BMC reported its draw two minutes ago (the power sync, which
	// this service does not run); the others have not.
	if err := w.svc.Inventory().RecordBMCStatus(context.Background(), "ma1", inventory.BMCStatus{Power: "on", Reachable: true, Outcome: "ok",
		ConsumedW: 8700, ReadAt: time.Now().Add(-2 * time.Minute).UTC()}); err != nil {
		t.Fatal(err)
	}
	ctx, shot := browser(t)
	signInBrowser(t, ctx, w, w.tech, "/ui/site")
	site := get(t, ctx, "site page", chromedp.Text(chromedp.CSS(`main`)))
	for _, want := range []string{"Site s1", "Hall h1", "2000.0 kW", "2027-03-01", "commissioning", "8.7 kW on 1 machine, oldest reading 2 min old; 2 machines without a reading"} {
		if !strings.Contains(site, want) {
			t.Errorf("site page lacks %q:\n%s", want, site)
		}
	}
	checkLabels(t, ctx, "site")
	shot("site")

	run(t, ctx, "hall floor", chromedp.Click(chromedp.CSS(`a[href="/ui/halls/h1"]`)), chromedp.WaitVisible(chromedp.CSS(`.rack-tile`)))
	tiles := get(t, ctx, "hall tiles", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('.rack-tile strong')).map(e => e.textContent)`))
	if !slices.Equal(tiles, []string{"ra", "rb"}) {
		t.Errorf("hall floor shows racks %v, want [ra rb]", tiles)
	}
	checkLabels(t, ctx, "hall")
	shot("hall")

	// The elevation: every machine in its units, U1 at the bottom.
	run(t, ctx, "rack elevation", chromedp.Click(chromedp.CSS(`a[href="/ui/racks/ra"]`)), chromedp.WaitVisible(chromedp.ID("elevation")))
	boxes := get(t, ctx, "elevation boxes", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#elevation a.machine')).map(a =>
		a.dataset.machine + '@U' + a.dataset.unit + ' y=' + a.querySelector('rect').getAttribute('y') + ' h=' + a.querySelector('rect').getAttribute('height') +
		' ' + a.getAttribute('aria-label'))`))
	slices.Sort(boxes)
	// 12 U of 24 px: ma1 fills U1–U2 (top edge at U2), ma2 fills U5.
	want := []string{"ma1@U1 y=241 h=46 ma1 in U1, enrolled, 8 × H100, tenant ta", "ma2@U5 y=169 h=22 ma2 in U5, enrolled, 8 × H100, tenant ta"}
	if !slices.Equal(boxes, want) {
		t.Fatalf("rack ra's elevation shows %v, want %v", boxes, want)
	}
	checkLabels(t, ctx, "rack")
	shot("rack")

	// The keyboard reaches a machine in the elevation, and Enter opens it.
	var loc string
	for range 60 {
		run(t, ctx, "tab", chromedp.KeyEvent(kb.Tab))
		focused := get(t, ctx, "focus", chromedp.Evaluate[string](`document.activeElement && document.activeElement.dataset ? (document.activeElement.dataset.machine || '') : ''`))
		if focused == "ma2" {
			run(t, ctx, "enter", chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.ID("power-action")))
			loc = get(t, ctx, "location", chromedp.Location())
			break
		}
	}
	if !strings.HasSuffix(loc, "/ui/machines/ma2") {
		t.Fatalf("tabbing through the rack page never opened ma2 with Enter (at %q)", loc)
	}
	checkLabels(t, ctx, "machine")

	// Power it on: confirm, then watch the job finish without a reload.
	if w.bmcs["ma2"].Power() {
		t.Fatal("ma2 starts powered on")
	}
	run(t, ctx, "mark the document", chromedp.Evaluate[chromedp.Void](`window.__sameDocument = "yes"`))
	run(t, ctx, "live stream open", until(`document.getElementById('live-status').dataset.live === 'open'`))
	run(t, ctx, "power on",
		chromedp.SetValue(chromedp.ID("power-action"), "on"),
		chromedp.Click(chromedp.ID("power-submit")),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")))
	run(t, ctx, "action result", until(`document.getElementById('action-result').textContent !== ''`))
	run(t, ctx, "job done", until(`document.getElementById('job-state').textContent === 'succeeded' && document.getElementById('job-kind').textContent === 'power'`))
	result := get(t, ctx, "result", chromedp.Text(chromedp.ID("action-result")))
	marker := get(t, ctx, "marker", chromedp.Evaluate[string](`window.__sameDocument || ""`))
	if !strings.Contains(result, "power on requested for ma2") {
		t.Errorf("action result %q", result)
	}
	if marker != "yes" {
		t.Fatal("the page was reloaded to show the job's state")
	}
	if !w.bmcs["ma2"].Power() {
		t.Fatal("the BMC of ma2 is still off after the power job succeeded")
	}
	shot("machine")

	// Live: a machine commissioned through the API, by another client,
	// moves on the rack page without a reload. The page reads nothing on
	// a clock: what moves it is the API's event feed, woken by the
	// commit of the job's event.
	run(t, ctx, "back to the rack", chromedp.Navigate(w.url+"/ui/racks/ra"),
		until(`document.getElementById('live-status').dataset.live === 'open'`),
		chromedp.Evaluate[chromedp.Void](`window.__sameDocument = "rack"`))
	if err := w.admin.Do(context.Background(), "POST", "/api/v1/machines/ma1/commission", nil, nil); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "live move",
		until(`document.querySelector('#elevation a[data-machine="ma1"] rect').getAttribute('class') === 'st-commissioning'`))
	marker = get(t, ctx, "marker", chromedp.Evaluate[string](`window.__sameDocument || ""`))
	if marker != "rack" {
		t.Fatal("the rack page was reloaded to show the new state")
	}
	shot("rack-live")

	// The jobs page lists the commissioning job from the API's job list.
	run(t, ctx, "jobs page", chromedp.Navigate(w.url+"/ui/jobs"), chromedp.WaitVisible(chromedp.ID("jobs-running")))
	jobs := get(t, ctx, "jobs", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('tr[data-job]')).map(r => r.querySelector('a').textContent + ' ' + r.closest('table').id)`))
	if len(jobs) != 1 || !strings.HasPrefix(jobs[0], "ma1 ") {
		t.Errorf("the jobs page lists %q, want ma1's commissioning job", jobs)
	}
	checkLabels(t, ctx, "jobs")
	shot("jobs")
}

func TestTenantSeesOnlyItsRackReimagesAndGetsNotFound(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	inv := w.svc.Inventory()
	for _, st := range []inventory.MachineState{inventory.MachineCommissioning, inventory.MachineAvailable} {
		if _, err := inv.SetMachineState(ctx, "ma1", st, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.admin.DoRaw(ctx, "POST", "/api/v1/images?name=tiny-os", "application/octet-stream", strings.NewReader(strings.Repeat("an image ", 1000)), nil); err != nil {
		t.Fatal(err)
	}
	bctx, shot := browser(t)
	signInBrowser(t, bctx, w, w.tenantA, "/ui/racks")
	racks := get(t, bctx, "rack list", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('main table a[href^="/ui/racks/"]')).map(a => a.textContent)`))
	if !slices.Equal(racks, []string{"ra"}) {
		t.Fatalf("tenant ta sees racks %v, want [ra]", racks)
	}
	nav := get(t, bctx, "nav", chromedp.Text(chromedp.CSS(`nav`)))
	if strings.Contains(nav, "Site") || strings.Contains(nav, "Audit") {
		t.Errorf("a tenant is offered staff pages: %q", nav)
	}
	checkLabels(t, bctx, "tenant racks")
	shot("tenant-racks")

	// Reimage its machine: image, SSH key, user-data, a confirmation.
	run(t, bctx, "reimage",
		chromedp.Navigate(w.url+"/ui/machines/ma1"),
		chromedp.WaitVisible(chromedp.ID("provision-submit")),
		chromedp.SetValue(chromedp.ID("image"), "tiny-os"),
		chromedp.SendKeys(chromedp.ID("ssh-keys"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl tenant@ta"),
		chromedp.SendKeys(chromedp.ID("user-data"), "#cloud-config\nhostname: ma1\n"),
		chromedp.Click(chromedp.ID("provision-submit")),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.CSS(`#action-result.ok`)),
		until(`document.getElementById('job-kind').textContent === 'provision'`))
	result := get(t, bctx, "result", chromedp.Text(chromedp.ID("action-result")))
	if !strings.Contains(result, "reimaging ma1 with tiny-os") {
		t.Errorf("reimage result %q", result)
	}
	m, err := inv.Machine(ctx, "ma1")
	if err != nil {
		t.Fatal(err)
	}
	if m.State != inventory.MachineProvisioning {
		t.Errorf("ma1 is %s after the reimage, want provisioning", m.State)
	}
	checkLabels(t, bctx, "tenant machine")
	shot("tenant-machine")
	// Watching a machine writes no audit event: the console never asks a
	// tenant's machine for a job it does not have (a refused access).
	if n := w.auditActions(t, "machine.job"); n != 0 {
		t.Errorf("the console's reads left %d machine.job events in the audit trail", n)
	}

	// Another tenant's machine is the 404 page.
	run(t, bctx, "other tenant's machine",
		chromedp.Navigate(w.url+"/ui/machines/mb1"),
		chromedp.WaitVisible(chromedp.ID("error-status")))
	code := get(t, bctx, "status", chromedp.AttributeValue(chromedp.ID("error-status"), "data-status")).Value
	if code != "404" {
		t.Fatalf("another tenant's machine page: status %s, want 404", code)
	}
	shot("tenant-404")
}
