// Package ui is metalhall's web console, served at /ui/ on the admin
// listener: server-rendered pages (html/template), a little JavaScript of
// its own, every asset embedded — sovereign sites are often air-gapped.
//
// The console has no authorization of its own. A signed-in session holds
// the API token it was opened with, and every page and every action is a
// request to the API's own handler, in process, with that token: the API's
// one route table and wrapper authenticate, authorize, scope to the tenant
// and audit it exactly as they would a CLI call. What the console adds is
// the session cookie and the CSRF check in front.
package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/metalhall/metalhall/api"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Defaults for Config's zero fields.
const (
	DefaultSessionTTL   = 8 * time.Hour
	DefaultMaxSessions  = 10000
	DefaultLiveInterval = time.Second
	DefaultMaxLive      = 500
	DefaultLiveReaders  = 4
	apiTimeout          = 30 * time.Second
)

// Prefix is where the console is mounted.
const Prefix = "/ui/"

const (
	cookieName = "mh_session"
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// Config is what the console needs.
type Config struct {
	// API is the API's root handler; the console sends it every request.
	API    http.Handler
	Logger *slog.Logger
	// SessionTTL is how long a session lasts after sign-in.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions held in memory; sign-in is refused
	// beyond it until some expire or sign out.
	MaxSessions int
	// LiveInterval is the least time between two reads of a live page
	// (a page of many machines waits longer): events that come faster
	// are taken together.
	LiveInterval time.Duration
	// MaxLive bounds the live streams open at once.
	MaxLive int
	// LiveReaders bounds the live streams reading the API at once.
	LiveReaders int
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// UI is the web console.
type UI struct {
	cfg   Config
	log   *slog.Logger
	mux   *http.ServeMux
	pages map[string]*template.Template
	live  chan struct{} // a slot per open live stream
	reads chan struct{} // a slot per live stream reading the API
	// stopped ends with StopLive: every live stream ends with it.
	stopped  context.Context
	stopLive context.CancelFunc

	mu       sync.Mutex
	sessions map[string]*session
}

// session is one signed-in browser. The token never leaves the server.
type session struct {
	id, token, csrf string
	Role, Tenant    string // shown on every page
	tokenID         string
	expires         time.Time
}

// Staff and Admin choose which pages and actions to offer; the API decides
// whether each is allowed.
func (s *session) Staff() bool { return s.Role == "admin" || s.Role == "technician" }
func (s *session) Admin() bool { return s.Role == "admin" }

// New builds the console.
func New(cfg Config) (*UI, error) {
	if cfg.API == nil {
		return nil, errors.New("ui: API handler is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.LiveInterval <= 0 {
		cfg.LiveInterval = DefaultLiveInterval
	}
	if cfg.MaxLive <= 0 {
		cfg.MaxLive = DefaultMaxLive
	}
	if cfg.LiveReaders <= 0 {
		cfg.LiveReaders = DefaultLiveReaders
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u := &UI{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), sessions: map[string]*session{},
		live: make(chan struct{}, cfg.MaxLive), reads: make(chan struct{}, cfg.LiveReaders)}
	u.stopped, u.stopLive = context.WithCancel(context.Background())
	if err := u.parseTemplates(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	u.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(http.FileServerFS(static))))
	u.routes()
	return u, nil
}

// ServeHTTP serves everything under /ui/.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// The console's own script and style only: no inline script, no
	// framing, no referrer leaking machine names.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	u.mux.ServeHTTP(w, r)
}

// StopLive ends every live stream, now and from now on: a stream never goes
// idle by itself, so a graceful HTTP shutdown would otherwise wait it out.
// Register it with http.Server.RegisterOnShutdown.
func (u *UI) StopLive() { u.stopLive() }

func staticHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// randomString is 32 random bytes, URL-safe.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ErrTooManySessions refuses a sign-in when MaxSessions are open.
var ErrTooManySessions = errors.New("too many console sessions are open: try again when some have expired or signed out")

// open makes a session for a token the API has accepted.
func (u *UI) open(token string, who api.WhoAmI) (*session, error) {
	now := u.cfg.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.sessions) >= u.cfg.MaxSessions {
		for id, s := range u.sessions {
			if now.After(s.expires) {
				delete(u.sessions, id)
			}
		}
		if len(u.sessions) >= u.cfg.MaxSessions {
			return nil, ErrTooManySessions
		}
	}
	s := &session{id: randomString(), token: token, csrf: randomString(), Role: who.Role, Tenant: who.Tenant,
		tokenID: who.TokenID, expires: now.Add(u.cfg.SessionTTL)}
	u.sessions[s.id] = s
	return s, nil
}

// session finds the request's live session, or nil.
func (u *UI) session(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sessions[c.Value]
	if s == nil {
		return nil
	}
	if u.cfg.Now().After(s.expires) {
		delete(u.sessions, s.id)
		return nil
	}
	return s
}

func (u *UI) close(s *session) {
	u.mu.Lock()
	delete(u.sessions, s.id)
	u.mu.Unlock()
}

// setCookie sets (or, with s nil, clears) the session cookie: HttpOnly so
// no script reads it, SameSite=Strict so no other site's page sends it,
// Secure whenever the console is reached over TLS.
func (u *UI) setCookie(w http.ResponseWriter, r *http.Request, s *session) {
	c := &http.Cookie{Name: cookieName, Path: Prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil}
	if s == nil {
		c.MaxAge = -1
	} else {
		c.Value = s.id
		c.Expires = s.expires
		c.MaxAge = int(s.expires.Sub(u.cfg.Now()).Seconds())
	}
	http.SetCookie(w, c)
}

// csrfOK checks a state change's CSRF token, from the form or the header
// the console's script sets.
func csrfOK(r *http.Request, s *session) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// APIError is an error answer of the API, as the console got it.
type APIError struct {
	Status  int
	Message string
	Code    string
}

func (e *APIError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Message) }

// status is the HTTP status of an API error, 500 for anything else.
func status(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusInternalServerError
}

// bufferWriter collects the API's answer to an in-process request.
type bufferWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.h }
func (b *bufferWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// call sends one request to the API in process, with the session's token,
// and decodes the answer into out (when not nil).
func (u *UI) call(ctx context.Context, token, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.RemoteAddr = "console"
	bw := &bufferWriter{h: http.Header{}}
	u.cfg.API.ServeHTTP(bw, req)
	if bw.status >= 400 {
		var e struct {
			Message string `json:"error"`
			Code    string `json:"code"`
		}
		json.Unmarshal(bw.body.Bytes(), &e)
		if e.Message == "" {
			e.Message = http.StatusText(bw.status)
		}
		return &APIError{Status: bw.status, Message: e.Message, Code: e.Code}
	}
	if out == nil || bw.status == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(bw.body.Bytes(), out); err != nil {
		return fmt.Errorf("API %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// get is call for reads, with the path's query built from q.
func (u *UI) get(ctx context.Context, s *session, path string, q url.Values, out any) error {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return u.call(ctx, s.token, http.MethodGet, path, nil, out)
}
