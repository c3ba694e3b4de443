package inventory

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestEventsBySubjectActorAndFollow(t *testing.T) {
	inv := newInv(t)
	for i := 0; i < 30; i++ {
		subj := fmt.Sprintf("machine/m%d", i%3)
		must(inv.AppendEvent(ctx, Event{Actor: fmt.Sprintf("tok%d", i%2), Subject: subj, Action: "power", Detail: fmt.Sprint(i)}))
	}
	m1 := must(inv.Events(ctx, EventFilter{Subject: "machine/m1"}))
	if len(m1) != 10 || m1[0].Detail != "1" || m1[9].Detail != "28" {
		t.Fatalf("m1 events: %d, first %+v", len(m1), m1[0])
	}
	last := must(inv.Events(ctx, EventFilter{Subject: "machine/m1", Limit: 2}))
	if len(last) != 2 || last[1].Detail != "28" || last[0].Detail != "25" {
		t.Fatalf("limit keeps the newest: %+v", last)
	}
	follow := must(inv.Events(ctx, EventFilter{Subject: "machine/m1", After: m1[7].Seq}))
	if len(follow) != 2 {
		t.Fatalf("after seq: %+v", follow)
	}
	byActor := must(inv.Events(ctx, EventFilter{Actor: "tok1"}))
	if len(byActor) != 15 {
		t.Fatalf("by actor: %d", len(byActor))
	}
	if ev := must(inv.Events(ctx, EventFilter{Since: time.Now().Add(time.Hour)})); len(ev) != 0 {
		t.Fatalf("since future: %d", len(ev))
	}
	if _, err := inv.AppendEvent(ctx, Event{Actor: "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("event without subject: %v", err)
	}
}

func TestTokens(t *testing.T) {
	inv := newInv(t)
	must(inv.CreateTenant(ctx, Tenant{Name: "bank"}))
	h := sha256.Sum256([]byte("secret"))
	must(inv.CreateToken(ctx, Token{ID: "t1", Role: RoleTenant, Tenant: "bank", Hash: h[:]}))
	wantErr[*ValidationError](t, must2(inv.CreateToken(ctx, Token{ID: "t2", Role: RoleTenant, Hash: h[:]})), "tenant")
	wantErr[*ValidationError](t, must2(inv.CreateToken(ctx, Token{ID: "t2", Role: "root", Hash: h[:]})), "role")
	wantErr[*NotFoundError](t, must2(inv.CreateToken(ctx, Token{ID: "t2", Role: RoleTenant, Tenant: "nope", Hash: h[:]})))
	if tok, err := inv.Authenticate(ctx, "t1", h[:]); err != nil || tok.Tenant != "bank" {
		t.Fatalf("authenticate: %v %v", tok, err)
	}
	wrong := sha256.Sum256([]byte("guess"))
	if _, err := inv.Authenticate(ctx, "t1", wrong[:]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong secret: %v", err)
	}
	must(inv.RevokeToken(ctx, "t1"))
	if _, err := inv.Authenticate(ctx, "t1", h[:]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoked: %v", err)
	}
	wantErr[*ConflictError](t, must2(inv.RevokeToken(ctx, "t1")), "already revoked")
}
