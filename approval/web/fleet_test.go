package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clawd-dev/clawd/approval"
)

// fakeFleet is the fleet's pending list as the database has it.
type fakeFleet struct {
	mu   sync.Mutex
	self string
	held []Held
	err  error
}

func (f *fakeFleet) Self() string { return f.self }

func (f *fakeFleet) Pending(context.Context) ([]Held, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Held(nil), f.held...), f.err
}

// TestListFleet: with a fleet the bearer-token list is every host's holds,
// each with the host holding it and its state (this host's from its own
// Manager, not twice); the database down, this host's alone and why.
func TestListFleet(t *testing.T) {
	src := newFake()
	own := src.add(pending("apown", "Open a pull request", "agent-a"))
	remote := pending("apremote", "Merge on host b", "agent-b")
	remote.Created = own.Created.Add(-time.Minute)
	fl := &fakeFleet{self: "host-a", held: []Held{
		{HeldOn: "host-a", HostState: "up", Approval: own}, // the database's copy of this host's
		{HeldOn: "host-b", HostState: "down", Approval: remote},
	}}
	srv := httptest.NewServer(Handler(src, Options{Token: testToken, Fleet: fl}))
	defer srv.Close()
	list := func() ListResponse {
		r := do(t, "GET", srv.URL+"/ui/api/approvals", "Bearer "+testToken, "", "")
		if r.code != 200 {
			t.Fatalf("%d %s", r.code, r.body)
		}
		var lr ListResponse
		if err := json.Unmarshal([]byte(r.body), &lr); err != nil {
			t.Fatal(err)
		}
		return lr
	}
	lr := list()
	var got []string
	for _, v := range lr.Pending {
		got = append(got, v.ID+"@"+v.HeldOn+":"+v.HostState)
	}
	if strings.Join(got, " ") != "apremote@host-b:down apown@host-a:up" || lr.Fleet != "host-a" || lr.FleetError != "" {
		t.Fatalf("fleet list = %v (fleet %q, error %q)", got, lr.Fleet, lr.FleetError)
	}
	// Without a token, nothing of any host.
	if r := do(t, "GET", srv.URL+"/ui/api/approvals", "", "", ""); r.code != 401 || strings.Contains(r.body, "apremote") {
		t.Fatalf("no token: %d %s", r.code, r.body)
	}
	// The database down: this host's, and the page is told.
	fl.mu.Lock()
	fl.err = errors.New("fleet database unreachable")
	fl.mu.Unlock()
	lr = list()
	if len(lr.Pending) != 1 || lr.Pending[0].ID != "apown" || !strings.Contains(lr.FleetError, "only this host's") {
		t.Fatalf("list with the database down = %+v", lr)
	}
	// Without a fleet nothing changes: no host names.
	solo := httptest.NewServer(Handler(src, Options{Token: testToken}))
	defer solo.Close()
	r := do(t, "GET", solo.URL+"/ui/api/approvals", "Bearer "+testToken, "", "")
	if strings.Contains(r.body, "held_on") || strings.Contains(r.body, `"fleet"`) || strings.Contains(r.body, "apremote") {
		t.Fatalf("single host list: %s", r.body)
	}
}

// TestBrowserFleetHolds: the page shows a hold of another host with that
// host's name and state, and approving it sends the decision (with the
// digest shown) to this host's core, which passes it to the holder.
func TestBrowserFleetHolds(t *testing.T) {
	b := newBrowser(t)
	src := newFake()
	remote := pending("apremote", "Merge on host b", "agent-b")
	fl := &fakeFleet{self: "host-a", held: []Held{{HeldOn: "host-b", HostState: "up", Approval: remote}}}
	src.result = &approval.Result{Outcome: approval.ResultDecided, Message: "Approved."}
	srv := httptest.NewServer(Handler(src, Options{Token: testToken, Fleet: fl}))
	defer srv.Close()
	b.login(srv.URL, testToken)
	b.waitJS(`document.querySelector('#pending .card .held-on') !== null`)
	if got := b.text("#pending .card .held-on"); got != "host-b" {
		t.Errorf("held on %q", got)
	}
	if got := b.text("#pending .card .summary"); got != remote.Summary {
		t.Errorf("summary %q", got)
	}
	b.do(chromedp.Click(chromedp.CSS(`#pending .card button[data-act="a"]`)))
	b.waitJS(`document.querySelector('#message').textContent === 'Approved.'`)
	want := approval.Decision{ID: "apremote", Digest: remote.Digest, Approve: true, Channel: "api", Display: "web page"}
	if got := src.calls(); len(got) != 1 || got[0] != want {
		t.Fatalf("decisions %+v, want %+v", got, want)
	}
	// A down host is shown as such.
	fl.mu.Lock()
	fl.held[0].HostState = "down"
	fl.mu.Unlock()
	b.waitJS(`document.querySelector('#pending .card .held-on').textContent === 'host-b (down)'`)
	b.clean()
}
