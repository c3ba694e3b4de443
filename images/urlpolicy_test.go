package images

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

func mustPolicy(t *testing.T, entries ...string) URLPolicy {
	t.Helper()
	p, err := ParseURLAllow(entries)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// imageServer serves a small raw image on addr (a loopback address) and
// counts the requests it gets.
func imageServer(t *testing.T, addr string, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	var n atomic.Int64
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { w.Write(diskImage(256<<10, 9)) }
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1); h(w, r) }))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestURLImportAllowList(t *testing.T) {
	srv, hits := imageServer(t, "127.0.0.1", nil)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	byName := "http://localhost:" + port
	cases := []struct {
		name    string
		policy  URLPolicy
		allowed bool
		url     string // default srv.URL
	}{
		{"no allow-list: URL import is off", URLPolicy{}, false, ""},
		{"a broad allow does not open loopback", mustPolicy(t, "0.0.0.0/0", "::/0"), false, ""},
		// The name is checked for what it resolves to at connect time,
		// as a rebinding name would be.
		{"an allowed name resolving to loopback", mustPolicy(t, "localhost"), false, byName},
		{"an allowed name, its loopback address allowed too", mustPolicy(t, "localhost", "127.0.0.1", "::1"), true, byName},
		{"another network only", mustPolicy(t, "10.20.0.0/16"), false, ""},
		{"loopback's own address, allowed explicitly", mustPolicy(t, "127.0.0.1"), true, ""},
		{"loopback's range, allowed explicitly", mustPolicy(t, "127.0.0.0/8"), true, ""},
		{"a BMC on an allowed range", URLPolicy{Allow: mustPolicy(t, "127.0.0.0/8").Allow,
			Refused: func(context.Context) (Refusals, error) {
				return Refusals{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, nil
			}}, false, ""},
		{"the service's own listener, even allowed explicitly", URLPolicy{Allow: mustPolicy(t, "127.0.0.1").Allow,
			Refused: ServiceDestinations(noMachines{}, srv.Listener.Addr())}, false, ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := newFixture(t, Options{URLPolicy: c.policy})
			before := hits.Load()
			u := c.url
			if u == "" {
				u = srv.URL
			}
			_, err := fx.s.ImportURL(ctx, u+"/img", ImportOptions{Name: "img"})
			if c.allowed {
				if err != nil {
					t.Fatalf("case %d: %v", i, err)
				}
				return
			}
			if !errors.Is(err, ErrURLRefused) || !errors.Is(err, inventory.ErrInvalid) {
				t.Fatalf("err = %v, want ErrURLRefused", err)
			}
			var re *URLRefusedError
			if errors.As(err, &re) && !re.Self && !strings.Contains(err.Error(), "allow-list") {
				t.Errorf("the message does not say how to allow: %v", err)
			}
			if hits.Load() != before {
				t.Fatal("the refused destination was contacted")
			}
			fx.wantFiles(t)
			fx.wantNoImages(t)
		})
	}
}

// Every redirect hop is checked: an allowed server that redirects to a
// loopback address the allow-list does not name gets nothing fetched.
func TestURLImportChecksEveryRedirectHop(t *testing.T) {
	inner, innerHits := imageServer(t, "127.0.0.2", nil)
	outer, _ := imageServer(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+"/img", http.StatusFound)
	})
	fx := newFixture(t, Options{URLPolicy: mustPolicy(t, "127.0.0.1")})
	_, err := fx.s.ImportURL(ctx, outer.URL+"/img", ImportOptions{Name: "img"})
	if !errors.Is(err, ErrURLRefused) {
		t.Fatalf("redirect to 127.0.0.2: %v, want ErrURLRefused", err)
	}
	if innerHits.Load() != 0 {
		t.Fatal("the redirect target was contacted")
	}
	fx.wantNoImages(t)

	// Allowed, both hops work.
	fx = newFixture(t, Options{URLPolicy: mustPolicy(t, "127.0.0.1", "127.0.0.2")})
	if _, err := fx.s.ImportURL(ctx, outer.URL+"/img", ImportOptions{Name: "img"}); err != nil {
		t.Fatal(err)
	}
}

// A refused caller learns nothing about the port: an open and a closed
// port on a refused address give the same answer.
func TestRefusedDestinationsDoNotRevealClosedPorts(t *testing.T) {
	open, _ := imageServer(t, "127.0.0.1", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	fx := newFixture(t, Options{})
	_, errOpen := fx.s.ImportURL(ctx, open.URL, ImportOptions{Name: "img"})
	_, errClosed := fx.s.ImportURL(ctx, closed, ImportOptions{Name: "img"})
	strip := func(err error, u string) string { return strings.ReplaceAll(err.Error(), u, "URL") }
	if errOpen == nil || errClosed == nil || strip(errOpen, open.URL) != strip(errClosed, closed) {
		t.Fatalf("open port: %v\nclosed port: %v", errOpen, errClosed)
	}
}

func TestParseURLAllowRefusesNonsense(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "http://example.net", "example.net:80", "exa mple.net", "-bad.example"} {
		if _, err := ParseURLAllow([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	p, err := ParseURLAllow([]string{"10.1.0.0/16", "192.0.2.7", "::1", "Images.Example.NET."})
	if err != nil || len(p.Allow) != 3 || p.Hosts[0] != "images.example.net" || p.Allow[1].Bits() != 32 || p.Allow[2].Bits() != 128 {
		t.Fatalf("%+v %v", p, err)
	}
}

type noMachines struct{}

func (noMachines) Machines(context.Context, inventory.MachineFilter) ([]inventory.Machine, error) {
	return nil, nil
}

// An allowed destination's failure is the caller's to see and fix: a
// closed port there is a clear 400, not an internal error.
func TestAllowedClosedPortIsAClearError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	fx := newFixture(t, Options{URLPolicy: mustPolicy(t, "127.0.0.1")})
	_, err = fx.s.ImportURL(ctx, closed+"/img", ImportOptions{Name: "img"})
	var ve *inventory.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "could not fetch") {
		t.Fatalf("err = %v, want a validation error", err)
	}
}
