package ui_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/ui"
)

// TestLivePagesAreCappedAndStopLiveEndsThem uses a stand-in API whose
// event feed never has news: what is under test is the console's own
// bound on open streams, which the composition root sets to 500.
func TestLivePagesAreCappedAndStopLiveEndsThem(t *testing.T) {
	apiStub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/api/v1/whoami":
			w.Write([]byte(`{"token_id":"t1","role":"technician"}`))
		case r.URL.Path == "/api/v1/events" && r.URL.Query().Has("after"):
			<-r.Context().Done() // a wait that ends only with its caller
			w.Write([]byte(`{"events":[],"next":7}`))
		case r.URL.Path == "/api/v1/events":
			w.Write([]byte(`{"events":[],"next":7}`))
		default:
			w.Write([]byte(`[]`))
		}
	})
	u, err := ui.New(ui.Config{API: apiStub, MaxLive: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u)
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	if resp, err := c.PostForm(srv.URL+"/ui/login", url.Values{"token": {"mh_x"}}); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	first, err := c.Get(srv.URL + "/ui/live?rack=r1")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first live page: %s", first.Status)
	}
	r := bufio.NewReader(first.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first snapshot: %q %v", line, err)
	}
	second, err := c.Get(srv.URL + "/ui/live?rack=r2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(second.Body)
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "too many live pages") {
		t.Fatalf("a live page beyond the cap: %s %q, want 503 saying why", second.Status, body)
	}
	// StopLive (at shutdown) ends the open stream, its wait in the API
	// included: the body ends instead of hanging.
	u.StopLive()
	if rest, err := io.ReadAll(r); err != nil {
		t.Fatalf("the stream after StopLive: %q %v", rest, err)
	}
}
