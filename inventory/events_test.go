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

// Paging forward reads every matching event exactly once, in order, while
// other writers keep appending: a page is bounded by sequence numbers,
// which only grow. Paging back from the newest reads them in reverse.
func TestEventPagesAreStableUnderConcurrentWrites(t *testing.T) {
	inv := newInv(t)
	for i := range 25 {
		must(inv.AppendEvent(ctx, Event{Actor: "tok", Subject: fmt.Sprintf("machine/m%d", i%2), Action: "machine.update", Outcome: "ok", Detail: fmt.Sprint(i)}))
	}
	f := EventFilter{Action: "machine.", Outcome: "ok", Limit: 4, Oldest: true}
	var got []string
	written := 25
	for page := 0; ; page++ {
		evs := must(inv.Events(ctx, f))
		for _, e := range evs {
			got = append(got, e.Detail)
		}
		if len(evs) < f.Limit {
			break
		}
		f.After = evs[len(evs)-1].Seq
		// Writes between pages: some match, some do not. Those that match
		// come in later pages, after everything written before them.
		if page < 3 {
			must(inv.AppendEvent(ctx, Event{Actor: "tok", Subject: "machine/m9", Action: "machine.update", Outcome: "ok", Detail: fmt.Sprint(written)}))
			must(inv.AppendEvent(ctx, Event{Actor: "tok", Subject: "machine/m9", Action: "machine.update", Outcome: "refused", Detail: "no"}))
			written++
		}
	}
	if len(got) != written {
		t.Fatalf("read %d events in pages, %d were written: %v", len(got), written, got)
	}
	for i, d := range got {
		if d != fmt.Sprint(i) {
			t.Fatalf("page order: event %d is %q: %v", i, d, got)
		}
	}

	// Back from the newest, with a subject.
	var back []string
	b := EventFilter{Subject: "machine/m1", Limit: 5}
	for {
		evs := must(inv.Events(ctx, b))
		for i := len(evs) - 1; i >= 0; i-- {
			back = append(back, evs[i].Detail)
		}
		if len(evs) < b.Limit {
			break
		}
		b.Before = evs[0].Seq
	}
	if len(back) != 12 || back[0] != "23" || back[11] != "1" {
		t.Fatalf("m1 back from the newest: %v", back)
	}
	fwd := must(inv.Events(ctx, EventFilter{Subject: "machine/m1", Limit: 3, Oldest: true, After: 0}))
	if len(fwd) != 3 || fwd[0].Detail != "1" || fwd[2].Detail != "5" {
		t.Fatalf("m1 forward: %+v", fwd)
	}
}
