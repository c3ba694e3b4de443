package ui_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/service"
	"github.com/metalhall/metalhall/service/servicetest"
)

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

func page(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestSignInSetsAStrictHttpOnlySessionCookie(t *testing.T) {
	w := newWorld(t)
	_, resp := w.signIn(t, w.tech)
	var found bool
	for _, c := range resp.Cookies() {
		if c.Name != "mh_session" {
			continue
		}
		found = true
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.MaxAge <= 0 || c.Path != "/ui/" {
			t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, a max age and path /ui/", c)
		}
	}
	if !found {
		t.Fatalf("no session cookie in %v", resp.Header["Set-Cookie"])
	}
}

func TestBadTokenDoesNotSignIn(t *testing.T) {
	w := newWorld(t)
	resp, err := http.PostForm(w.url+"/ui/login", url.Values{"token": {"mh_0123456789abcdef_" + strings.Repeat("x", 43)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("bad token: %s with cookies %v, want 401 and none", resp.Status, resp.Cookies())
	}
}

func TestStateChangeWithoutCSRFTokenIsRefusedAndChangesNothing(t *testing.T) {
	w := newWorld(t)
	c, _ := w.signIn(t, w.tech)
	code, body := page(t, c, w.url+"/ui/machines/ma1")
	m := csrfMeta.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("machine page: %d, csrf meta found: %v", code, m != nil)
	}
	csrf := m[1]

	for name, form := range map[string]url.Values{
		"none":  {"action": {"on"}},
		"wrong": {"action": {"on"}, "csrf": {csrf + "x"}},
	} {
		resp, err := c.PostForm(w.url+"/ui/machines/ma1/power", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("power without a valid CSRF token (%s): %s, want 403", name, resp.Status)
		}
	}
	if n := w.auditActions(t, "machine.power"); n != 0 {
		t.Fatalf("%d machine.power requests reached the API without a CSRF token", n)
	}
	if w.bmcs["ma1"].Power() {
		t.Fatal("the machine was powered on without a CSRF token")
	}

	// Signing out is a state change too.
	resp, err := c.PostForm(w.url+"/ui/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without CSRF: %s, want 403", resp.Status)
	}

	// With the token, the same request goes through to the API.
	resp, err = c.PostForm(w.url+"/ui/machines/ma1/power", url.Values{"action": {"on"}, "csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("power with the CSRF token: %s, want 303 back to the page", resp.Status)
	}
	if n := w.auditActions(t, "machine.power"); n != 1 {
		t.Fatalf("%d machine.power audit events, want 1", n)
	}

	// Signed out, the session is gone.
	resp, err = c.PostForm(w.url+"/ui/logout", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := page(t, c, w.url+"/ui/machines/ma1"); code != http.StatusSeeOther {
		t.Fatalf("machine page after sign-out: %d, want 303 to the sign-in page", code)
	}
}

func TestTenantGetsNotFoundPageForAnotherTenantsMachine(t *testing.T) {
	w := newWorld(t)
	c, _ := w.signIn(t, w.tenantA)
	other, body := page(t, c, w.url+"/ui/machines/mb1")
	missing, body2 := page(t, c, w.url+"/ui/machines/no-such-machine")
	if other != http.StatusNotFound || missing != http.StatusNotFound {
		t.Fatalf("another tenant's machine: %d, a missing one: %d; want 404 both", other, missing)
	}
	if strings.Contains(body, "mb1") || strings.Contains(body, "tb") {
		t.Fatal("the 404 page names the other tenant's machine or tenant")
	}
	strip := func(s string) string { return csrfMeta.ReplaceAllString(s, "") }
	if strip(body) != strings.ReplaceAll(strip(body2), "no-such-machine", "mb1") {
		t.Fatal("the 404 page for another tenant's machine differs from one for a machine that does not exist")
	}
	code, racks := page(t, c, w.url+"/ui/racks")
	if code != http.StatusOK || !strings.Contains(racks, `href="/ui/racks/ra"`) || strings.Contains(racks, `href="/ui/racks/rb"`) {
		t.Fatalf("tenant ta's rack list (%d) should show ra and not rb:\n%s", code, racks)
	}
}

func TestSessionCookieIsSecureUnderTLS(t *testing.T) {
	svc := servicetest.Start(t, "", func(c *service.Config) { c.TLS.Force = true })
	if !strings.HasPrefix(svc.AdminURL(), "https://") {
		t.Fatalf("admin URL %s: want TLS", svc.AdminURL())
	}
	// The test trusts the service's own generated certificate, nothing else.
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(svc.Dir, service.GeneratedCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(svc.AdminURL()+"/ui/login", url.Values{"token": {svc.Token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cookies) != 1 || !cookies[0].Secure || !cookies[0].HttpOnly {
		t.Fatalf("sign-in over TLS: %s, cookies %+v: want one Secure HttpOnly session cookie", resp.Status, cookies)
	}
}

func TestEveryPageAnswersForStaffAndStaffPagesAreRefusedToTenants(t *testing.T) {
	w := newWorld(t)
	admin, _ := w.signIn(t, w.svc.Token)
	for path, want := range map[string]string{
		"/ui/site":         "2027-03-01",
		"/ui/halls/h1":     `data-machine="mb1"`,
		"/ui/racks":        `href="/ui/racks/rb"`,
		"/ui/racks/ra":     `data-unit="5"`,
		"/ui/machines/ma1": "8 × H100",
		"/ui/jobs":         "Nothing queued.",
		"/ui/images":       "No images.",
		"/ui/audit":        "machine.enroll",
		"/ui/audit?action=tenant.assign&outcome=ok": "rack/rb",
		"/ui/tokens": "console test",
	} {
		code, body := page(t, admin, w.url+path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("admin GET %s: %d, want 200 with %q", path, code, want)
		}
	}
	if _, body := page(t, admin, w.url+"/ui/audit?action=tenant.assign"); strings.Contains(body, "machine.enroll") {
		t.Error("the audit page filtered by action still lists other actions")
	}
	tenant, _ := w.signIn(t, w.tenantA)
	for _, path := range []string{"/ui/site", "/ui/tokens"} {
		if code, _ := page(t, tenant, w.url+path); code != http.StatusForbidden {
			t.Errorf("tenant GET %s: %d, want 403 (the API's answer)", path, code)
		}
	}
	// A tenant's audit page is its own view: its requests and what was
	// done to its machines, never another tenant's.
	if code, body := page(t, tenant, w.url+"/ui/audit"); code != http.StatusOK || strings.Contains(body, "rack/rb") || strings.Contains(body, "machine/mb") {
		t.Errorf("tenant GET /ui/audit: %d, want 200 with nothing of tenant B's:\n%s", code, body)
	}
	// The hall floor is the API's racks and machines of the hall, which
	// for a tenant are its own.
	if code, body := page(t, tenant, w.url+"/ui/halls/h1"); code != http.StatusOK || !strings.Contains(body, `data-machine="ma1"`) ||
		strings.Contains(body, "mb1") || strings.Contains(body, `href="/ui/racks/rb"`) {
		t.Errorf("tenant GET the hall floor: %d, want 200 with its own rack only", code)
	}
}
