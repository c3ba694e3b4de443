package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/metalhall/metalhall/inventory"
)

// A token reads "mh_<id>_<secret>": the ID finds the record, the 256-bit
// secret proves it. Only the SHA-256 of the secret is stored.
const tokenPrefix = "mh_"

// Principal is who is calling.
type Principal struct {
	TokenID string
	Role    inventory.Role
	Tenant  string // set for tenant tokens
}

// NewToken creates and stores a token and returns the secret form, which
// is shown once and never stored.
func NewToken(ctx context.Context, inv *inventory.Store, role inventory.Role, tenant, label string) (string, *inventory.Token, error) {
	return newToken(ctx, inv, inventory.Token{Role: role, Tenant: tenant, Label: label})
}

// newToken stores t with a new ID and secret hash.
func newToken(ctx context.Context, inv *inventory.Store, t inventory.Token) (string, *inventory.Token, error) {
	idb := make([]byte, 8)
	secret := make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return "", nil, err
	}
	if _, err := rand.Read(secret); err != nil {
		return "", nil, err
	}
	id := hex.EncodeToString(idb)
	enc := base64.RawURLEncoding.EncodeToString(secret)
	hash := sha256.Sum256([]byte(enc))
	t.ID, t.Hash = id, hash[:]
	out, err := inv.CreateToken(ctx, t)
	if err != nil {
		return "", nil, err
	}
	return tokenPrefix + id + "_" + enc, out, nil
}

// parseToken splits a presented token into its ID and the hash of its
// secret.
func parseToken(s string) (id string, hash []byte, ok bool) {
	rest, found := strings.CutPrefix(s, tokenPrefix)
	if !found {
		return "", nil, false
	}
	id, secret, found := strings.Cut(rest, "_")
	if !found || len(id) != 16 || len(secret) != 43 {
		return "", nil, false
	}
	h := sha256.Sum256([]byte(secret))
	return id, h[:], true
}

// roleSet is the roles a route admits.
type roleSet uint8

const (
	admin roleSet = 1 << iota
	technician
	tenant

	staff    = admin | technician
	everyone = admin | technician | tenant
)

func (s roleSet) has(r inventory.Role) bool {
	switch r {
	case inventory.RoleAdmin:
		return s&admin != 0
	case inventory.RoleTechnician:
		return s&technician != 0
	case inventory.RoleTenant:
		return s&tenant != 0
	}
	return false
}

func (s roleSet) names() []string {
	var out []string
	for _, r := range []inventory.Role{inventory.RoleAdmin, inventory.RoleTechnician, inventory.RoleTenant} {
		if s.has(r) {
			out = append(out, string(r))
		}
	}
	return out
}
