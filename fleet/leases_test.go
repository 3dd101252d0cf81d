package fleet

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/internal/pgtest"
)

// consumers counts the hosts running one Exclusive channel at once, as
// the platform would see them (Telegram answers a second poller 409).
type consumers struct {
	mu      sync.Mutex
	running map[string]bool
	most    int
	starts  []string // hosts, in the order they started consuming
	changed chan struct{}
}

func newConsumers() *consumers {
	return &consumers{running: map[string]bool{}, changed: make(chan struct{})}
}

func (c *consumers) enter(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running[host] = true
	c.most = max(c.most, len(c.running))
	c.starts = append(c.starts, host)
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *consumers) leave(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.running, host)
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitFor waits until cond holds (under the lock) on some change.
func (c *consumers) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("never: %s", what)
		}
	}
}

// exclusiveChannel is one host's instance of an Exclusive channel "tg":
// it records cards (approvaltest.Channel) and counts itself consuming
// while its Run runs.
type exclusiveChannel struct {
	approvaltest.Channel
	host string
	c    *consumers
}

func (e *exclusiveChannel) Exclusive() bool { return true }

func (e *exclusiveChannel) Run(ctx context.Context, _ approval.Decider) error {
	e.c.enter(e.host)
	<-ctx.Done()
	e.c.leave(e.host)
	return nil
}

type leaseHost struct {
	f   *Fleet
	m   *approval.Manager
	ch  *exclusiveChannel
	run context.CancelFunc // stops the channel and the beats (a clean stop)
	end chan struct{}
}

// startLeaseHost starts a host whose Manager asks "tg" (cards posted by the
// lease holder) and the CLI, and runs "tg" under the lease.
func startLeaseHost(t *testing.T, s *pgtest.Server, db, name string, clock *approvaltest.Clock, c *consumers) *leaseHost {
	t.Helper()
	f, err := Open(Config{Database: s.DSN(db), Password: s.Password, Host: name, Heartbeat: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := &leaseHost{f: f, ch: &exclusiveChannel{Channel: approvaltest.Channel{ChannelName: "tg"}, host: name, c: c}, end: make(chan struct{})}
	h.m, err = approval.New(approval.Config{Store: f.Store(), Now: clock.Now, AfterFunc: clock.AfterFunc,
		Channels: []approval.Channel{h.ch}, Approvers: map[string][]string{"tg": {"42"}},
		CardsElsewhere: map[string]bool{"tg": true}})
	if err != nil {
		t.Fatal(err)
	}
	f.Store().Serve(h.m)
	ctx, cancel := context.WithCancel(context.Background())
	h.run = cancel
	go f.Run(ctx)
	go func() {
		f.RunExclusive(ctx, h.ch, func(ctx context.Context) { h.ch.Run(ctx, h.m) })
		close(h.end)
	}()
	t.Cleanup(func() { cancel(); <-h.end; h.m.Shutdown(); f.Close() })
	return h
}

// waitCard waits until h's channel instance posted (or updated) a card of
// id that satisfies cond.
func waitCard(t *testing.T, h *leaseHost, id string, updated bool, cond func(*approval.Card) bool) *approval.Card {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		posts, updates := h.ch.Cards()
		list := posts
		if updated {
			list = updates
		}
		for _, c := range list {
			if c.ID == id && (cond == nil || cond(c)) {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no card of %s (posts %d, updates %d)", h.f.Name(), id, len(posts), len(updates))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func postsOf(h *leaseHost, id string) int {
	posts, _ := h.ch.Cards()
	n := 0
	for _, c := range posts {
		if c.ID == id {
			n++
		}
	}
	return n
}

// testLeases: of three hosts only the lease holder runs the Exclusive
// channel; it posts the card of an approval held on another host and
// updates it when that host decides it; the holder crashing (its database
// connections gone) stops its channel before another host takes the
// lease over, which then updates the cards the first one posted and posts
// new ones. Never two consumers at once.
func testLeases(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	c := newConsumers()
	b := startLeaseHost(t, s, db, "b", clock, c)
	c.waitFor(t, "b runs the channel", func() bool { return c.running["b"] })
	if got := b.f.Leases(); len(got) != 1 || got[0] != "tg" {
		t.Fatalf("b's leases = %v", got)
	}
	a := startLeaseHost(t, s, db, "a", clock, c)
	cc := startLeaseHost(t, s, db, "c", clock, c)
	if got := s.SQL(t, db, "SELECT holder FROM clawd_leases WHERE channel = 'tg'"); got != "b" {
		t.Fatalf("lease holder = %q, want b", got)
	}

	// Held on a: the card is posted by b, not by a.
	ap, out := holdOn(t, a.m, "/leased")
	card := waitCard(t, b, ap.ID, false, nil)
	if card.Channel != "tg" || len(card.People) != 0 && card.People[0] != "42" || len(card.Buttons()) == 0 {
		t.Fatalf("b posted %+v", card)
	}
	if got := s.SQL(t, db, "SELECT posted_by || ' ' || ref FROM clawd_cards WHERE approval_id = '"+ap.ID+"'"); got != "b ref-"+ap.ID {
		t.Fatalf("card kept as %q", got)
	}
	// A click that reached b (b's poller) is judged on a.
	r := b.m.Decide(context.Background(), approval.Decision{ID: ap.ID, Digest: ap.Digest[:16], Approve: true, Channel: "tg", User: "42"})
	if r.Outcome != approval.ResultDecided {
		t.Fatalf("click on b = %+v", r)
	}
	if o := <-out; !o.Approved || o.By != "tg:42" {
		t.Fatalf("the agent on a got %+v", o)
	}
	waitCard(t, b, ap.ID, true, func(c *approval.Card) bool { return c.Status == approval.Approved && len(c.Buttons()) == 0 })
	for _, h := range []*leaseHost{a, cc} {
		if posts, updates := h.ch.Cards(); len(posts)+len(updates) != 0 {
			t.Fatalf("%s, not the lease holder, touched cards: %d posts, %d updates", h.f.Name(), len(posts), len(updates))
		}
	}

	// A card b posted, then b crashes: its pool is closed under it.
	ap2, out2 := holdOn(t, a.m, "/after-crash")
	waitCard(t, b, ap2.ID, false, nil)
	sqlEventually(t, s, db, "SELECT count(*) FROM clawd_cards WHERE approval_id = '"+ap2.ID+"'", "1")
	b.f.pool.Close()
	c.waitFor(t, "a or c runs the channel after b", func() bool { return c.running["a"] || c.running["c"] })
	var next *leaseHost
	c.mu.Lock()
	if c.running["a"] {
		next = a
	} else {
		next = cc
	}
	c.mu.Unlock()
	// The new holder updates the card b posted (same ref) when a decides.
	a.m.Decide(context.Background(), approval.Decision{ID: ap2.ID, Approve: false, Channel: approval.ChannelCLI, Reason: "no"})
	<-out2
	waitCard(t, next, ap2.ID, true, func(c *approval.Card) bool { return c.Status == approval.Denied })
	if n := postsOf(next, ap2.ID); n != 0 {
		t.Fatalf("the new holder posted b's card again (%d)", n)
	}
	// And posts new ones.
	ap3, out3 := holdOn(t, a.m, "/new-holder")
	waitCard(t, next, ap3.ID, false, nil)
	a.m.Decide(context.Background(), approval.Decision{ID: ap3.ID, Approve: false, Channel: approval.ChannelCLI})
	<-out3

	// A clean stop gives the lease up for the other host to take.
	other := a
	if next == a {
		other = cc
	}
	next.run()
	<-next.end
	c.waitFor(t, "the last host runs the channel", func() bool { return c.running[other.f.Name()] })

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.most != 1 {
		t.Fatalf("%d hosts consumed the channel at once (starts %v)", c.most, c.starts)
	}
	if strings.Join(c.starts, " ") != "b "+next.f.Name()+" "+other.f.Name() {
		t.Fatalf("consumers started in order %v", c.starts)
	}
}

// holdOn starts a request on m and returns its approval once pending.
func holdOn(t *testing.T, m *approval.Manager, path string) (*approval.Approval, <-chan approval.Outcome) {
	t.Helper()
	return hold(t, &fleetHost{m: m}, testHold(path))
}

func sqlEventually(t *testing.T, s *pgtest.Server, db, q, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := s.SQL(t, db, q)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q", q, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
