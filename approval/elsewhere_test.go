package approval

import (
	"context"
	"testing"
)

// TestCardsElsewhere: a channel whose cards another host posts (a fleet's
// Exclusive channel held elsewhere) gets neither the card nor its update
// from this Manager, and a click from it is still judged here.
func TestCardsElsewhere(t *testing.T) {
	other := &recNotifier{name: "tg"}
	e := newEnv(t, func(c *Config) {
		c.Channels = append(c.Channels, other)
		c.Approvers = map[string][]string{"tg": {"42"}, "rec": {"7"}}
		c.CardsElsewhere = map[string]bool{"tg": true}
	})
	out := async(e.m, context.Background(), hold("agent", "POST", "/repos/a/b/merge"))
	a := waitPending(t, e.m, 1)[0]
	eventually(t, "the rec card", func() bool { n, _, _ := e.note.snapshot(); return len(n) == 1 })
	r := e.m.Decide(context.Background(), Decision{ID: a.ID, Digest: a.Digest[:16], Approve: true, Channel: "tg", User: "42"})
	if r.Outcome != ResultDecided {
		t.Fatalf("click from tg = %+v", r)
	}
	if o := recv(t, out); !o.Approved || o.By != "tg:42" {
		t.Fatalf("outcome %+v", o)
	}
	e.m.wait()
	if n, u, _ := other.snapshot(); len(n)+len(u) != 0 {
		t.Fatalf("tg got %d posts, %d updates from this Manager", len(n), len(u))
	}
	if _, u, _ := e.note.snapshot(); len(u) == 0 {
		t.Fatal("rec's card was not updated")
	}
}

// TestSyncGrantsWithoutSharedStore: on a single host (bbolt) SyncGrants
// changes nothing.
func TestSyncGrantsWithoutSharedStore(t *testing.T) {
	e := newEnv(t, nil)
	out := async(e.m, context.Background(), hold("agent", "POST", "/repos/a/b/merge"))
	a := waitPending(t, e.m, 1)[0]
	if _, err := decideCompat(e.m, a.ID, true, "cli", "", GrantFor); err != nil {
		t.Fatal(err)
	}
	recv(t, out)
	if err := e.m.SyncGrants(); err != nil {
		t.Fatal(err)
	}
	if gs := e.m.ListGrants(); len(gs) != 1 {
		t.Fatalf("grants after SyncGrants: %+v", gs)
	}
}
