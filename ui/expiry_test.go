package ui_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/ui"
)

// TestSessionExpires uses a stand-in API that accepts any token: what is
// under test is the console's own clock, which the composition root does
// not let a test turn.
func TestSessionExpires(t *testing.T) {
	now := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	apiStub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/whoami":
			w.Write([]byte(`{"token_id":"t1","role":"technician"}`))
		default:
			w.Write([]byte(`[]`))
		}
	})
	u, err := ui.New(ui.Config{API: apiStub, SessionTTL: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {"mh_x"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	login := httptest.NewRecorder()
	u.ServeHTTP(login, req)
	cookies := login.Result().Cookies()
	if login.Code != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("sign-in: %d, cookies %v", login.Code, cookies)
	}
	get := func() int {
		r := httptest.NewRequest("GET", "/ui/racks", nil)
		r.AddCookie(cookies[0])
		w := httptest.NewRecorder()
		u.ServeHTTP(w, r)
		return w.Code
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("racks page within the session: %d, want 200", code)
	}
	now = now.Add(time.Hour + time.Second)
	if code := get(); code != http.StatusSeeOther {
		t.Fatalf("racks page after the session expired: %d, want 303 to the sign-in page", code)
	}
}
