package inventory

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

var bTokens = []byte("tokens") // id → Token

func init() { extraBuckets = append(extraBuckets, bTokens) }

// Role is what a token may do (CLI.md, Roles).
type Role string

const (
	RoleAdmin      Role = "admin"
	RoleTechnician Role = "technician"
	RoleTenant     Role = "tenant"
)

// ValidRole reports whether r names a role.
func ValidRole(r Role) bool { return r == RoleAdmin || r == RoleTechnician || r == RoleTenant }

// Token is an API credential. Only the SHA-256 of its secret is stored; the
// secret itself is shown once, at creation, and never again.
type Token struct {
	ID         string    `json:"id"`
	Role       Role      `json:"role"`
	Tenant     string    `json:"tenant,omitempty"`
	Label      string    `json:"label,omitempty"`
	Hash       []byte    `json:"hash"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`

	// ExpiresAt is when the token stops working; zero: never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Live reports whether the token works at now: not revoked, not expired.
func (t *Token) Live(now time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// ExpiredError is a token presented with its right secret after it
// expired: its holder learns that, and whom to ask.
type ExpiredError struct {
	ID string
	At time.Time
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("token %s expired at %s: ask an admin for a new one", e.ID, e.At.UTC().Format(time.RFC3339))
}

// CreateToken stores a token whose secret hashes to hash.
func (s *Store) CreateToken(ctx context.Context, t Token) (*Token, error) {
	if !ValidRole(t.Role) {
		return nil, invalid("role", "%q is not a role: use admin, technician or tenant", t.Role)
	}
	if (t.Role == RoleTenant) != (t.Tenant != "") {
		return nil, invalid("tenant", "a tenant token must name its tenant, and only a tenant token may name one")
	}
	if len(t.Hash) != sha256.Size {
		return nil, invalid("hash", "must be a SHA-256")
	}
	if err := checkName("id", t.ID); err != nil {
		return nil, err
	}
	if len(t.Label) > 200 {
		return nil, invalid("label", "is longer than 200 characters")
	}
	t.CreatedAt = s.now().UTC()
	if !t.ExpiresAt.IsZero() && !t.ExpiresAt.After(t.CreatedAt) {
		return nil, invalid("ttl", "the token would expire at %s, which is not in the future", t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	err := s.update(func(tx kv.Tx) error {
		if t.Tenant != "" && !exists(tx, bTenants, t.Tenant) {
			return &NotFoundError{Kind: "tenant", Name: t.Tenant}
		}
		if exists(tx, bTokens, t.ID) {
			return &ExistsError{Kind: "token", Name: t.ID}
		}
		return putJSON(bkt(tx, bTokens), []byte(t.ID), t)
	})
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// Authenticate returns the live token with this ID whose hash matches, in
// constant time. Any mismatch — unknown ID, wrong secret, revoked — is the
// same ErrNotFound so a caller learns nothing from the difference.
func (s *Store) Authenticate(ctx context.Context, id string, hash []byte) (*Token, error) {
	var t *Token
	err := s.view(func(tx kv.Tx) (err error) { t, err = get[Token](tx, bTokens, "token", id); return })
	if err != nil || subtle.ConstantTimeCompare(t.Hash, hash) != 1 || !t.RevokedAt.IsZero() {
		return nil, &NotFoundError{Kind: "token", Name: id}
	}
	if !t.Live(s.now()) {
		return nil, &ExpiredError{ID: t.ID, At: t.ExpiresAt}
	}
	return t, nil
}

// TouchToken records when a token was last used.
func (s *Store) TouchToken(ctx context.Context, id string, at time.Time) error {
	return s.batch(func(tx kv.Tx) error {
		t, err := get[Token](tx, bTokens, "token", id)
		if err != nil {
			return err
		}
		t.LastUsedAt = at.UTC()
		return putJSON(bkt(tx, bTokens), []byte(id), t)
	})
}

// Tokens lists tokens by ID.
func (s *Store) Tokens(ctx context.Context) ([]Token, error) {
	var out []Token
	err := s.view(func(tx kv.Tx) (err error) { out, err = list[Token](tx, bTokens, nil); return })
	return out, err
}

// RevokeToken revokes a token for good.
func (s *Store) RevokeToken(ctx context.Context, id string) (*Token, error) {
	var out *Token
	err := s.update(func(tx kv.Tx) error {
		t, err := get[Token](tx, bTokens, "token", id)
		if err != nil {
			return err
		}
		if !t.RevokedAt.IsZero() {
			return &ConflictError{Msg: fmt.Sprintf("token %q was already revoked at %s", id, t.RevokedAt.Format(time.RFC3339))}
		}
		now := s.now()
		if t.Role == RoleAdmin && t.Live(now) {
			// Revoking the last working admin token would lock every
			// admin out for good.
			others := 0
			if err := bkt(tx, bTokens).ForEach(func(k, v []byte) error {
				var o Token
				if err := json.Unmarshal(v, &o); err != nil {
					return fmt.Errorf("token %q: %w", k, err)
				}
				if o.ID != t.ID && o.Role == RoleAdmin && o.Live(now) {
					others++
				}
				return nil
			}); err != nil {
				return err
			}
			if others == 0 {
				return &ConflictError{Msg: fmt.Sprintf("token %q is the last working admin token: create another admin token before revoking it", id)}
			}
		}
		t.RevokedAt = now.UTC()
		out = t
		return putJSON(bkt(tx, bTokens), []byte(id), t)
	})
	return out, err
}
