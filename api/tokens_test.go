package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
)

func TestTokensExpire(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	inv := must(inventory.Open(filepath.Join(t.TempDir(), "db"), inventory.Options{NoSync: true, Now: clock}))
	t.Cleanup(func() { inv.Close() })
	key := make([]byte, 32)
	srv := must(New(Config{Store: inv, Sealer: must(seal.New(key))}))
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	must(inv.CreateTenant(ctx, inventory.Tenant{Name: "ta"}))
	adminSecret, _ := must2(NewToken(ctx, inv, inventory.RoleAdmin, "", "bootstrap"))
	f := &fixture{t: t, inv: inv, srv: srv, http: hs, tokens: map[string]string{"admin": adminSecret}}

	status, data := f.do("admin", "POST", "/api/v1/tokens", TokenCreate{Role: "technician", Label: "ci"})
	var created TokenCreated
	if status != http.StatusCreated || json.Unmarshal(data, &created) != nil {
		t.Fatalf("%d %s", status, data)
	}
	if want := time.Now().Add(DefaultTokenTTL[inventory.RoleTechnician]); created.ExpiresAt.Before(want.Add(-time.Hour)) || created.ExpiresAt.After(want.Add(time.Hour)) {
		t.Errorf("default expiry %s, want about %s", created.ExpiresAt, want)
	}
	for _, bad := range []string{"soon", "0s", "-5d", "99999999999999d", "100000d"} {
		if status, data := f.do("admin", "POST", "/api/v1/tokens", TokenCreate{Role: "tenant", Tenant: "ta", TTL: bad}); status != http.StatusBadRequest || !strings.Contains(string(data), "ttl") {
			t.Errorf("ttl %q: %d %s", bad, status, data)
		}
	}
	status, data = f.do("admin", "POST", "/api/v1/tokens", TokenCreate{Role: "tenant", Tenant: "ta", TTL: "2h"})
	if status != http.StatusCreated || json.Unmarshal(data, &created) != nil {
		t.Fatalf("%d %s", status, data)
	}
	f.tokens["short"] = created.Secret
	if status, _ := f.do("short", "GET", "/api/v1/machines", nil); status != http.StatusOK {
		t.Fatalf("a fresh token: %d", status)
	}
	mu.Lock()
	now = now.Add(3 * time.Hour)
	mu.Unlock()
	status, data = f.do("short", "GET", "/api/v1/machines", nil)
	if status != http.StatusUnauthorized || !strings.Contains(string(data), "expired at") || !strings.Contains(string(data), "token_expired") {
		t.Fatalf("an expired token: %d %s", status, data)
	}
	// A wrong secret for that ID learns nothing about expiry.
	forged := created.Secret[:len(created.Secret)-4] + "AAAA"
	if status, data := f.do(forged, "GET", "/api/v1/machines", nil); status != http.StatusUnauthorized || strings.Contains(string(data), "expired") {
		t.Fatalf("forged token for an expired ID: %d %s", status, data)
	}
	// The bootstrap admin token does not expire.
	if status, _ := f.do("admin", "GET", "/api/v1/tokens", nil); status != http.StatusOK {
		t.Fatalf("bootstrap admin token after 3h: %d", status)
	}
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func TestTheLastAdminTokenCannotBeRevoked(t *testing.T) {
	f := newFixture(t)
	admin := f.tokenID("admin")
	status, data := f.do("admin", "DELETE", "/api/v1/tokens/"+admin, nil)
	if status != http.StatusConflict || !strings.Contains(string(data), "last working admin token") {
		t.Fatalf("revoking the last admin token: %d %s", status, data)
	}
	if status, _ := f.do("admin", "GET", "/api/v1/tokens", nil); status != http.StatusOK {
		t.Fatal("the refused revoke locked the admin out")
	}
	status, data = f.do("admin", "POST", "/api/v1/tokens", TokenCreate{Role: "admin", Label: "second"})
	var second TokenCreated
	if status != http.StatusCreated || json.Unmarshal(data, &second) != nil {
		t.Fatalf("%d %s", status, data)
	}
	if status, data := f.do("admin", "DELETE", "/api/v1/tokens/"+admin, nil); status != http.StatusOK {
		t.Fatalf("revoking an admin token with another one left: %d %s", status, data)
	}
	f.tokens["second"] = second.Secret
	if status, _ := f.do("second", "DELETE", "/api/v1/tokens/"+second.ID, nil); status != http.StatusConflict {
		t.Fatalf("revoking the new last admin token: %d", status)
	}
}
