package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	telegramfake "github.com/clawd-dev/clawd/approval/telegram/fake"
	"github.com/clawd-dev/clawd/approval/web"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
	"github.com/clawd-dev/clawd/internal/pgtest"
)

// startFleetHost starts a daemon as fleet host name against db: its own
// state dir, pin root, socket, API port and containerd namespace; the
// password from a file, as a mounted Secret gives it.
func startFleetHost(t *testing.T, ctd *harness.Containerd, pg *pgtest.Server, db, name, ns, pol string) *Clawd {
	t.Helper()
	return startFleetHostWith(t, ctd, pg, db, name, ns, pol, "")
}

// startFleetHostWith is startFleetHost with more clawd.yaml (approval
// channels).
func startFleetHostWith(t *testing.T, ctd *harness.Containerd, pg *pgtest.Server, db, name, ns, pol, more string) *Clawd {
	t.Helper()
	pwDir := t.TempDir()
	pw := pg.PasswordFile(pwDir)
	return StartClawd(t, ctd, ClawdOpts{Policy: pol, Extra: fmt.Sprintf(`namespaces: [%s]
fleet:
  database: %s
  password-file: %s
  host: %s
  heartbeat: 300ms
`, ns, pg.DSN(db), pw, name) + more})
}

// fleetStates is host:state for each host one daemon lists, or the error.
func fleetStates(c *Clawd) string {
	fh, err := c.Client().FleetHosts(context.Background())
	if err != nil {
		return "error: " + err.Error()
	}
	var s []string
	for _, h := range fh.Hosts {
		s = append(s, h.Name+":"+h.State)
	}
	return strings.Join(s, " ")
}

// TestFleetHosts: three daemons on this machine as three hosts of one
// fleet; each sees all three; a killed one is shown down, a stopped one
// stopped; the database going away neither stops the daemons nor is
// hidden from fleet ls, and they re-join by themselves when it returns.
func TestFleetHosts(t *testing.T) {
	harness.RequireRoot(t)
	pg := pgtest.Start(t)
	db := pg.CreateDB(t)
	ctd := harness.SharedContainerd(t)
	a := startFleetHost(t, ctd, pg, db, "host-a", "fleet-a", "")
	b := startFleetHost(t, ctd, pg, db, "host-b", "fleet-b", "")
	c := startFleetHost(t, ctd, pg, db, "host-c", "fleet-c", "")
	all := "host-a:up host-b:up host-c:up"
	for _, h := range []*Clawd{a, b, c} {
		eventually(t, "every host sees three hosts up", func() bool { return fleetStates(h) == all })
	}
	out := a.MustCLI("fleet", "ls")
	for _, want := range []string{"HOST", "host-a (this host)", "host-b", "host-c", daemon.Version} {
		if !strings.Contains(out, want) {
			t.Errorf("clawd fleet ls lacks %q:\n%s", want, out)
		}
	}
	if got := pg.SQL(t, db, "SELECT count(*) FROM clawd_schema_version"); got == "0" {
		t.Fatal("no schema version recorded")
	}

	// A crash: c's heartbeats stop; a and b show it down, themselves up.
	c.Kill()
	for _, h := range []*Clawd{a, b} {
		eventually(t, "host-c shown down", func() bool { return fleetStates(h) == "host-a:up host-b:up host-c:down" })
	}
	out = b.MustCLI("fleet", "ls")
	if !strings.Contains(out, "down") {
		t.Errorf("clawd fleet ls does not show the down host:\n%s", out)
	}
	// A clean stop is told apart from a crash.
	b.Stop()
	eventually(t, "host-b shown stopped", func() bool { return fleetStates(a) == "host-a:up host-b:stopped host-c:down" })

	// The database goes away: fleet ls says so (not a stale list), the
	// daemon keeps serving.
	pg.Stop()
	eventually(t, "fleet ls reports the outage", func() bool {
		return strings.Contains(fleetStates(a), "error: fleet database")
	})
	if _, err := a.Client().Status(context.Background()); err != nil {
		t.Fatalf("daemon stopped answering during the database outage: %v", err)
	}
	pg.Restart()
	// c restarts into its old name (it was down) while the DB is back.
	c.Start()
	eventually(t, "a and c up again after the outage", func() bool { return fleetStates(a) == "host-a:up host-b:stopped host-c:up" })

	// A host without fleet.database says it is not in a fleet.
	solo := StartClawd(t, ctd, ClawdOpts{})
	if out, err := solo.CLI("fleet", "ls"); err == nil || !strings.Contains(out, "not in a fleet") {
		t.Errorf("fleet ls on a single host = %v:\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(solo.StateDir, "approvals.db")); err != nil {
		t.Errorf("single host does not keep its bbolt store: %v", err)
	}
}

const fleetPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: fleet-approve
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/approve/**"]
      action: approve
    - name: fleet-short
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/timeout/**"]
      action: approve
      approval_timeout: 3s
    - name: allow-rest
      action: allow
`

// fleetPendingID waits until c holds a request for path and returns its ID.
func fleetPendingID(t *testing.T, c *Clawd, path string) string {
	t.Helper()
	var id string
	eventually(t, "the request held on "+c.Dir, func() bool {
		out, err := c.CLI("approvals", "-o", "json")
		if err != nil {
			return false
		}
		var list []approval.Approval
		json.Unmarshal([]byte(out), &list)
		for _, a := range list {
			if strings.HasSuffix(a.URL, path) {
				id = a.ID
				return true
			}
		}
		return false
	})
	return id
}

// TestFleetApproveOnAnotherHost: a request held on host A is released by
// `clawd approve ID` on host B; a grant given from B applies on A, also
// after A restarts; B cannot decide what A no longer holds.
func TestFleetApproveOnAnotherHost(t *testing.T) {
	harness.RequireRoot(t)
	pg := pgtest.Start(t)
	db := pg.CreateDB(t)
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	a := startFleetHost(t, ctd, pg, db, "host-a", "default", fleetPolicy)
	b := startFleetHost(t, ctd, pg, db, "host-b", "fleet-b", fleetPolicy)
	eventually(t, "both hosts up", func() bool { return fleetStates(b) == "host-a:up host-b:up" })
	ct := ctd.Run(t, "fleet-agent", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent"}})
	a.MustCLI("attach", ct.Name)
	held := func(p string) <-chan apprAgentResult {
		return apprAgentAsync(ct, "-timeout", "90s", "-X", "POST", "-d", "x", upURL(p))
	}

	// Held on A, approved on B.
	const p1 = "/approve/one"
	ch := held(p1)
	id := fleetPendingID(t, a, p1)
	if n := apprUpCount(up, p1); n != 0 {
		t.Fatalf("upstream saw %d requests before the decision", n)
	}
	// B lists it, as held on A.
	if out := b.MustCLI("approvals", "--fleet"); !strings.Contains(out, "host-a (up):") || !strings.Contains(out, id) || !strings.Contains(out, p1) {
		t.Fatalf("clawd approvals --fleet on B:\n%s", out)
	}
	out := b.MustCLI("approve", id)
	if !strings.Contains(out, "approved "+id) {
		t.Fatalf("approve on B: %s", out)
	}
	if r := apprAwait(t, ch); r.Status != 200 || !strings.Contains(r.Body, p1) {
		t.Fatalf("the agent on A got %+v", r)
	}
	if n := apprUpCount(up, p1); n != 1 {
		t.Fatalf("upstream saw %d requests, want 1", n)
	}
	// A audited it; B's audit has no approval of its own.
	eventually(t, "A's audit line of the approval", func() bool {
		for _, e := range a.AuditEntries() {
			if e.Event == audit.EventApproval && e.Action == approval.Approved && e.ApprovalID == id && e.By == "cli" {
				return true
			}
		}
		return false
	})
	for _, e := range b.AuditEntries() {
		if e.Event == audit.EventApproval && e.ApprovalID == id {
			t.Errorf("B audited %s of A's approval", e.Action)
		}
	}
	// "Who let which agent do what" is one query over the fleet's trail.
	q := fmt.Sprintf("SELECT host || ' ' || (entry->>'by') FROM clawd_audit WHERE event = 'approval' AND entry->>'approval_id' = '%s' AND entry->>'action' = 'approved'", id)
	eventually(t, "A's audit line in the fleet database", func() bool { return pg.SQL(t, db, q) == "host-a cli" })
	// Deny from B after the approval: refused, nothing changes.
	if out, err := b.CLI("deny", id); err == nil {
		t.Fatalf("deny after approve succeeded on B: %s", out)
	}

	// B's approvals page (its bearer-token list) shows A's hold, as held
	// on host-a; approved there, it is released on A.
	const pPage = "/approve/by-page"
	ch = held(pPage)
	id = fleetPendingID(t, a, pPage)
	tok, err := os.ReadFile(filepath.Join(b.StateDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	page := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, "http://"+b.API+"/ui/api/"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, rb
	}
	var lr web.ListResponse
	var shown *web.View
	eventually(t, "B's page lists A's hold", func() bool {
		code, body := page("GET", "approvals", "")
		if code != 200 || json.Unmarshal(body, &lr) != nil {
			return false
		}
		for _, v := range lr.Pending {
			if v.ID == id {
				shown = v
				return true
			}
		}
		return false
	})
	if shown.HeldOn != "host-a" || shown.HostState != "up" || lr.Fleet != "host-b" {
		t.Fatalf("B's page shows %+v (fleet %q)", shown, lr.Fleet)
	}
	if code, body := page("POST", "approvals/"+id+"/decide", `{"act":"a","digest":"`+shown.Digest+`"}`); code != 200 {
		t.Fatalf("approve on B's page: %d %s", code, body)
	}
	if r := apprAwait(t, ch); r.Status != 200 {
		t.Fatalf("approved on B's page, the agent on A got %+v", r)
	}

	// A grant given from B for 15 minutes applies on A, and after A restarts.
	const p2 = "/approve/grant"
	ch = held(p2)
	id = fleetPendingID(t, a, p2)
	b.MustCLI("approve", id, "--for", "15m")
	if r := apprAwait(t, ch); r.Status != 200 {
		t.Fatalf("the agent got %+v", r)
	}
	a.Stop()
	a.Start()
	eventually(t, "the container re-adopted after A's restart", func() bool { return len(a.List()) == 1 })
	if r := apprAwait(t, held(p2)); r.Status != 200 {
		t.Fatalf("after A's restart the granted request got %+v, want 200 without a hold", r)
	}
	if n := apprUpCount(up, p2); n != 2 {
		t.Fatalf("upstream saw %d requests for the granted path, want 2", n)
	}
	if got := a.MustCLI("grants"); !strings.Contains(got, p2) || !strings.Contains(got, ct.Name) {
		t.Fatalf("A's grants after restart lack the grant of approval %s:\n%s", id, got)
	}

	// Grants are live across the fleet: B lists the grant A holds (no
	// restart of B), and B revokes it: A asks again at once.
	eventually(t, "B lists the fleet's grant", func() bool {
		got, err := b.CLI("grants")
		return err == nil && strings.Contains(got, p2)
	})
	gid := pg.SQL(t, db, "SELECT id FROM clawd_grants WHERE data->>'approval_id' = '"+id+"'")
	if out := b.MustCLI("grants", "revoke", gid); !strings.Contains(out, "revoked") {
		t.Fatalf("revoke on B: %s", out)
	}
	eventually(t, "A drops the grant revoked on B", func() bool {
		got, err := a.CLI("grants")
		return err == nil && !strings.Contains(got, p2)
	})
	ch = held(p2)
	id = fleetPendingID(t, a, p2)
	if n := apprUpCount(up, p2); n != 2 {
		t.Fatalf("after the revoke on B, the request on A reached the upstream (%d, want 2)", n)
	}
	b.MustCLI("deny", id)
	if r := apprAwait(t, ch); r.Status == 200 {
		t.Fatalf("denied after the revoke, the agent got %+v", r)
	}
	revoked := false
	for _, e := range b.AuditEntries() {
		if e.Event == audit.EventGrant && e.Action == audit.ActionRevoked {
			revoked = true
		}
	}
	if !revoked {
		t.Error("B did not audit the revocation it made")
	}
}

// TestFleetDatabaseOutage: with PostgreSQL stopped, allowed traffic flows
// by local policy, a new approve-rule hold cannot be decided from another
// host and ends by its timeout (denied, audited once, never sent), and
// after PostgreSQL returns the hosts decide across again without restarts.
func TestFleetDatabaseOutage(t *testing.T) {
	harness.RequireRoot(t)
	pg := pgtest.Start(t)
	db := pg.CreateDB(t)
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	a := startFleetHost(t, ctd, pg, db, "host-a", "default", fleetPolicy)
	b := startFleetHost(t, ctd, pg, db, "host-b", "fleet-b", fleetPolicy)
	eventually(t, "both hosts up", func() bool { return fleetStates(b) == "host-a:up host-b:up" })
	ct := ctd.Run(t, "fleet-outage", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent"}})
	a.MustCLI("attach", ct.Name)

	pg.Stop()
	eventually(t, "B sees the outage", func() bool { return strings.HasPrefix(fleetStates(b), "error: ") })
	if r := agent(t, ct, upURL("/allowed/during-outage")); r.Status != 200 {
		t.Fatalf("allowed request during the outage got %+v", r)
	}
	const p = "/timeout/during-outage"
	ch := apprAgentAsync(ct, "-timeout", "60s", "-X", "POST", "-d", "x", upURL(p))
	id := fleetPendingID(t, a, p)
	if out, err := b.CLI("approve", id); err == nil {
		t.Fatalf("B approved with the database down: %s", out)
	}
	r := apprAwait(t, ch)
	if r.Status == 200 {
		t.Fatalf("the held request was let through: %+v", r)
	}
	if n := apprUpCount(up, p); n != 0 {
		t.Fatalf("upstream saw %d requests of the timed-out hold", n)
	}
	n := 0
	for _, e := range a.AuditEntries() {
		if e.Event == audit.EventApproval && e.ApprovalID == id && e.Action == approval.TimedOut {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("A audited the timeout %d times, want once", n)
	}

	pg.Restart()
	eventually(t, "both hosts up again", func() bool { return fleetStates(b) == "host-a:up host-b:up" })
	// The lines A wrote during the outage reach the database, once.
	q := fmt.Sprintf("SELECT count(*) FROM clawd_audit WHERE host = 'host-a' AND event = 'approval' AND entry->>'approval_id' = '%s' AND entry->>'action' = 'timeout'", id)
	eventually(t, "the outage's audit lines shipped", func() bool { return pg.SQL(t, db, q) == "1" })
	if got := pg.SQL(t, db, "SELECT count(*) - count(DISTINCT (host, seq)) FROM clawd_audit"); got != "0" {
		t.Fatalf("%s audit lines stored twice", got)
	}
	lines, maxSeq := 0, int64(0)
	for _, e := range a.AuditEntries() {
		if e.Seq > 0 {
			lines++
			maxSeq = max(maxSeq, e.Seq)
		}
	}
	const p2 = "/approve/after-outage"
	ch = apprAgentAsync(ct, "-timeout", "60s", "-X", "POST", "-d", "x", upURL(p2))
	id = fleetPendingID(t, a, p2)
	b.MustCLI("approve", id)
	if r := apprAwait(t, ch); r.Status != 200 {
		t.Fatalf("after the outage, approve on B: the agent got %+v", r)
	}
	// Every chain line A had written by then is in the database, once.
	q = fmt.Sprintf("SELECT count(*) FROM clawd_audit WHERE host = 'host-a' AND seq <= %d", maxSeq)
	eventually(t, "all of A's lines shipped once", func() bool { return pg.SQL(t, db, q) == fmt.Sprint(lines) })
}

// telegramFleetYAML is the approval block of a host whose Telegram channel
// polls the fake through an API base labelled with the host's name.
func telegramFleetYAML(tg *telegramfake.Server, host string) string {
	st := tg.SettingsAs(host)
	return fmt.Sprintf(`approval:
  channels:
    - type: telegram
      name: telegram
      approvers: ["424242"]
      bot-token: %q
      chat-id: %q
      api-base: %q
      mode: poll
      poll-timeout: 30
`, st["bot-token"], st["chat-id"], st["api-base"])
}

// pollersSince are the hosts that called getUpdates after the first n calls.
func pollersSince(tg *telegramfake.Server, n int) map[string]int {
	out := map[string]int{}
	for _, p := range tg.Polls()[n:] {
		out[p.From]++
	}
	return out
}

// TestFleetTelegramLease: three hosts with the same Telegram bot (long
// polling, which only one consumer may do): only the lease holder polls;
// a request held on host A has its card posted by B, the poller; the click
// B receives releases A's request, audited on A as the Telegram user's.
// B is killed: another host takes the poller over and a new hold on A is
// approved through it. Telegram never sees two pollers at once.
func TestFleetTelegramLease(t *testing.T) {
	harness.RequireRoot(t)
	pg := pgtest.Start(t)
	db := pg.CreateDB(t)
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	tg := telegramfake.New()
	t.Cleanup(tg.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// B first: it takes the lease and polls.
	b := startFleetHostWith(t, ctd, pg, db, "host-b", "fleet-b", fleetPolicy, telegramFleetYAML(tg, "host-b"))
	if err := tg.WaitPollFrom(ctx, "host-b", 0); err != nil {
		t.Fatalf("host-b never polled: %v", err)
	}
	a := startFleetHostWith(t, ctd, pg, db, "host-a", "default", fleetPolicy, telegramFleetYAML(tg, "host-a"))
	c := startFleetHostWith(t, ctd, pg, db, "host-c", "fleet-c", fleetPolicy, telegramFleetYAML(tg, "host-c"))
	eventually(t, "three hosts up", func() bool { return fleetStates(a) == "host-a:up host-b:up host-c:up" })
	if got := pg.SQL(t, db, "SELECT holder FROM clawd_leases WHERE channel = 'telegram'"); got != "host-b" {
		t.Fatalf("telegram lease held by %q, want host-b", got)
	}
	// fleet ls says which host runs the channel.
	runs := func(c *Clawd, host string) bool {
		out, err := c.CLI("fleet", "ls")
		if err != nil {
			return false
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == host {
				return strings.HasSuffix(line, " telegram")
			}
		}
		return false
	}
	if !runs(a, "host-b") || runs(a, "host-a") || runs(a, "host-c") {
		t.Fatalf("clawd fleet ls on A does not show host-b alone running telegram:\n%s", a.MustCLI("fleet", "ls"))
	}
	ct := ctd.Run(t, "fleet-tg-agent", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent"}})
	a.MustCLI("attach", ct.Name)
	held := func(p string) <-chan apprAgentResult {
		return apprAgentAsync(ct, "-timeout", "120s", "-X", "POST", "-d", "x", upURL(p))
	}
	approveByTelegram := func(p, poster string) string {
		t.Helper()
		ch := held(p)
		id := fleetPendingID(t, a, p)
		if _, err := tg.WaitCard(ctx, id, func(m telegramfake.Message) bool { return len(m.Keyboard) > 0 }); err != nil {
			t.Fatalf("no card for the hold on A: %v", err)
		}
		q := "SELECT posted_by FROM clawd_cards WHERE channel = 'telegram' AND approval_id = '" + id + "'"
		eventually(t, "the card's ref kept", func() bool { return pg.SQL(t, db, q) != "" })
		if got := pg.SQL(t, db, q); got != poster {
			t.Fatalf("card posted by %q, want the lease holder %s", got, poster)
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests before the click", n)
		}
		// A stranger's click, through the same poller: refused on A.
		if reply, err := tg.Click(ctx, id, approval.ActApprove, "666"); err != nil || !strings.Contains(reply, "not asked") {
			t.Fatalf("a stranger's click answered %q, %v", reply, err)
		}
		reply, err := tg.Click(ctx, id, approval.ActApprove, "424242")
		if err != nil || !strings.Contains(reply, "Approved") {
			t.Fatalf("the approver's click answered %q, %v", reply, err)
		}
		if r := apprAwait(t, ch); r.Status != 200 || !strings.Contains(r.Body, p) {
			t.Fatalf("the agent on A got %+v", r)
		}
		if n := apprUpCount(up, p); n != 1 {
			t.Fatalf("upstream saw %d requests, want 1", n)
		}
		// The lease holder updates the card: decided, no buttons.
		m, err := tg.WaitCard(ctx, id, func(m telegramfake.Message) bool { return len(m.Keyboard) == 0 })
		if err != nil || !strings.Contains(m.Text, "424242") {
			t.Fatalf("the card after the click: %q %v", m.Text, err)
		}
		// A audited who approved; the fleet's trail has it too.
		eventually(t, "A's audit of the Telegram approval", func() bool {
			for _, e := range a.AuditEntries() {
				if e.Event == audit.EventApproval && e.Action == approval.Approved && e.ApprovalID == id && e.By == "telegram:424242" {
					return true
				}
			}
			return false
		})
		aq := fmt.Sprintf("SELECT host || ' ' || (entry->>'by') FROM clawd_audit WHERE event = 'approval' AND entry->>'approval_id' = '%s' AND entry->>'action' = 'approved'", id)
		eventually(t, "the approval in the fleet's audit trail", func() bool { return pg.SQL(t, db, aq) == "host-a telegram:424242" })
		return id
	}

	approveByTelegram("/approve/by-telegram", "host-b")
	if got := pollersSince(tg, 0); len(got) != 1 || got["host-b"] == 0 {
		t.Fatalf("getUpdates callers before the crash: %v, want host-b alone", got)
	}
	for _, h := range []*Clawd{a, c} {
		for _, e := range h.LogLines() {
			if msg, _ := e["msg"].(string); strings.Contains(msg, "channel lease taken") {
				t.Fatalf("%s took the lease while host-b held it: %v", h.Dir, e)
			}
		}
	}

	// B crashes. Another host takes the poller over once B's lease has
	// expired, and a new hold on A is approved through it.
	n := len(tg.Polls())
	b.Kill()
	var next string
	eventually(t, "another host polls after host-b was killed", func() bool {
		for h := range pollersSince(tg, n) {
			if h == "host-a" || h == "host-c" {
				next = h
				return true
			}
		}
		return false
	})
	if got := pg.SQL(t, db, "SELECT holder FROM clawd_leases WHERE channel = 'telegram'"); got != next {
		t.Fatalf("lease holder %q, poller %s", got, next)
	}
	if !runs(a, next) || runs(a, "host-b") {
		t.Fatalf("clawd fleet ls after the takeover:\n%s", a.MustCLI("fleet", "ls"))
	}
	approveByTelegram("/approve/after-takeover", next)
	got := pollersSince(tg, n)
	delete(got, "host-b") // a poll it sent just before the kill
	if len(got) != 1 || got[next] == 0 {
		t.Fatalf("getUpdates callers after the crash: %v, want %s alone", got, next)
	}
	if o := tg.Overlaps(); o != 0 {
		t.Fatalf("Telegram saw %d getUpdates calls overlap another (409 Conflict): two pollers at once", o)
	}
	if v := tg.Violations(); len(v) != 0 {
		t.Fatalf("Bot API violations: %v", v)
	}
}

// trafficLoop makes allowed requests from one container, one after the
// other, until halted, and keeps what each got.
type trafficLoop struct {
	mu       sync.Mutex
	done     int
	bad      []string
	stop     chan struct{}
	finished chan struct{}
}

func startTraffic(ct *harness.Container, prefix string) *trafficLoop {
	l := &trafficLoop{stop: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(l.finished)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			p := fmt.Sprintf("%s/%d", prefix, i)
			r := <-apprAgentAsync(ct, upURL(p))
			l.mu.Lock()
			if r.Err != nil || r.A.Status != 200 {
				l.bad = append(l.bad, fmt.Sprintf("%s: %d %v %s", p, r.A.Status, r.Err, r.A.Error))
			}
			l.done++
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *trafficLoop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// halt stops the loop after its request in flight; it returns how many
// requests were made and those that did not get a 200.
func (l *trafficLoop) halt() (int, []string) {
	close(l.stop)
	<-l.finished
	return l.done, l.bad
}

// auditFileKeys is seq:sha256 of every complete chain line of c's audit
// file, sorted as auditDBKeys sorts.
func auditFileKeys(t *testing.T, c *Clawd) []string {
	t.Helper()
	b, err := os.ReadFile(c.Audit)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		seq int64
		sum string
	}
	var ks []key
	lines := strings.Split(string(b), "\n")
	for _, l := range lines[:len(lines)-1] { // the last is "" or a torn line
		var h struct {
			Seq int64 `json:"seq"`
		}
		if json.Unmarshal([]byte(l), &h) != nil || h.Seq <= 0 {
			continue
		}
		ks = append(ks, key{h.Seq, fmt.Sprintf("%x", sha256.Sum256([]byte(l)))})
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].seq < ks[j].seq || ks[i].seq == ks[j].seq && ks[i].sum < ks[j].sum })
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = fmt.Sprintf("%d:%s", k.seq, k.sum)
	}
	return out
}

// auditDBKeys is seq:sha256 of every clawd_audit row of host.
func auditDBKeys(t *testing.T, pg *pgtest.Server, db, host string) []string {
	t.Helper()
	s := pg.SQL(t, db, "SELECT coalesce(string_agg(seq || ':' || encode(sha256, 'hex'), ',' ORDER BY seq, encode(sha256, 'hex')), '') FROM clawd_audit WHERE host = '"+host+"'")
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// diffKeys says what one list has that the other lacks.
func diffKeys(file, db []string) string {
	in := func(l []string) map[string]int {
		m := map[string]int{}
		for _, k := range l {
			m[k]++
		}
		return m
	}
	f, d := in(file), in(db)
	var missing, extra []string
	for k, n := range f {
		if d[k] < n {
			missing = append(missing, k)
		}
	}
	for k, n := range d {
		if f[k] < n {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return fmt.Sprintf("file %d lines, database %d rows; not in the database: %v; not in the file (or doubled): %v", len(file), len(db), missing, extra)
}

// TestFleetOutageThreeHosts: three hosts serve traffic from their
// containers while PostgreSQL is stopped and restarted. During the outage
// allowed requests keep getting through on every host; each host's
// approve-rule hold cannot be decided from another host and ends by its
// timeout, denied and audited once; a host that crashes and starts again
// during the outage serves at once. After PostgreSQL returns: every
// host's clawd_audit rows are exactly its audit file's lines (no line
// lost, none doubled); the outage's holds are in clawd_approvals as they
// ended; the restarted host expired the hold its crash cut short, audited
// once; and each host's new hold is approved from another host.
func TestFleetOutageThreeHosts(t *testing.T) {
	harness.RequireRoot(t)
	pg := pgtest.Start(t)
	db := pg.CreateDB(t)
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	names := []string{"host-a", "host-b", "host-c"}
	nss := []string{"default", "fleet-b", "fleet-c"}
	hosts := make([]*Clawd, 3)
	cts := make([]*harness.Container, 3)
	for i := range names {
		hosts[i] = startFleetHost(t, ctd, pg, db, names[i], nss[i], fleetPolicy)
	}
	const allUp = "host-a:up host-b:up host-c:up"
	for _, h := range hosts {
		eventually(t, "three hosts up", func() bool { return fleetStates(h) == allUp })
	}
	for i, h := range hosts {
		cts[i] = ctd.Run(t, "fleet3-"+names[i], harness.RunOpts{Namespace: nss[i], Files: map[string]string{agentBin(t): "/agent"}})
		h.MustCLI("attach", cts[i].Name)
	}
	allowed := func(i int) string { return "/allowed/" + names[i] }
	loops := make([]*trafficLoop, 3)
	for i := range hosts {
		loops[i] = startTraffic(cts[i], allowed(i))
	}
	totals := make([]int, 3)
	defer func() { // a failed test leaves no loop running
		for _, l := range loops {
			select {
			case <-l.stop:
			default:
				l.halt()
			}
		}
	}()
	for i, l := range loops {
		eventually(t, "traffic flows on "+names[i], func() bool { return l.count() >= 2 })
	}

	// PostgreSQL stops while the three serve traffic.
	pg.Stop()
	for _, h := range hosts {
		eventually(t, "the host sees the outage", func() bool { return strings.HasPrefix(fleetStates(h), "error: ") })
	}
	// Allowed requests made after every host saw the outage get through.
	for i, l := range loops {
		mark := l.count()
		eventually(t, "allowed traffic during the outage on "+names[i], func() bool { return l.count() >= mark+2 })
	}
	// Each host holds an approve-rule request (timeout 3s); another host
	// cannot decide it; it ends by its timeout: denied, never sent.
	ids := make([]string, 3)
	chs := make([]<-chan apprAgentResult, 3)
	timeoutPath := func(i int) string { return "/timeout/outage-" + names[i] }
	for i := range hosts {
		chs[i] = apprAgentAsync(cts[i], "-timeout", "60s", "-X", "POST", "-d", "x", upURL(timeoutPath(i)))
	}
	for i, h := range hosts {
		ids[i] = fleetPendingID(t, h, timeoutPath(i))
		if out, err := hosts[(i+1)%3].CLI("approve", ids[i]); err == nil {
			t.Fatalf("%s approved %s's hold with the database down: %s", names[(i+1)%3], names[i], out)
		}
	}
	for i := range hosts {
		r := apprAwait(t, chs[i])
		if r.Status != 403 || !strings.Contains(r.Body, "approval_timeout") {
			t.Fatalf("the hold on %s during the outage ended %d %q, want 403 approval_timeout", names[i], r.Status, r.Body)
		}
		if n := apprUpCount(up, timeoutPath(i)); n != 0 {
			t.Fatalf("upstream saw %d requests of %s's timed-out hold", n, names[i])
		}
	}

	// host-c crashes with a request held and starts again, all during the
	// outage: it serves at once.
	c := hosts[2]
	totals[2], _ = loops[2].halt() // its requests fail while it is down
	if _, bad := totals[2], loops[2].bad; len(bad) != 0 {
		t.Fatalf("allowed requests on host-c failed before its crash: %v", bad)
	}
	const cutPath = "/approve/cut-by-crash"
	cutCh := apprAgentAsync(cts[2], "-timeout", "60s", "-X", "POST", "-d", "x", upURL(cutPath))
	cutID := fleetPendingID(t, c, cutPath)
	c.Kill()
	<-cutCh // the agent's connection went with the daemon
	c.Start()
	eventually(t, "host-c re-adopts its container during the outage", func() bool { return len(c.List()) == 1 })
	if r := agent(t, cts[2], upURL("/allowed/host-c-restarted")); r.Status != 200 {
		t.Fatalf("allowed request on host-c restarted during the outage got %+v", r)
	}
	loops[2] = startTraffic(cts[2], allowed(2)+"-2")

	pg.Restart()
	for _, h := range hosts {
		eventually(t, "three hosts up after the outage", func() bool { return fleetStates(h) == allUp })
	}
	// The outage's holds are in clawd_approvals as they ended; the one
	// host-c's crash cut short is expired by its new run, audited once.
	for i := range hosts {
		q := "SELECT status FROM clawd_approvals WHERE id = '" + ids[i] + "'"
		eventually(t, names[i]+"'s outage hold written to the database", func() bool { return pg.SQL(t, db, q) == approval.TimedOut })
	}
	q := "SELECT status || ' ' || (data->>'reason') FROM clawd_approvals WHERE id = '" + cutID + "'"
	eventually(t, "the hold cut by host-c's crash expired", func() bool { return pg.SQL(t, db, q) == "expired clawd restarted" })
	// Cross-host approve works again: each host's new hold is released
	// from the next host.
	for i, h := range hosts {
		p := "/approve/after-outage-" + names[i]
		ch := apprAgentAsync(cts[i], "-timeout", "60s", "-X", "POST", "-d", "x", upURL(p))
		id := fleetPendingID(t, h, p)
		if out := hosts[(i+1)%3].MustCLI("approve", id); !strings.Contains(out, "approved "+id) {
			t.Fatalf("approve on %s: %s", names[(i+1)%3], out)
		}
		if r := apprAwait(t, ch); r.Status != 200 {
			t.Fatalf("approved from %s after the outage, the agent on %s got %+v", names[(i+1)%3], names[i], r)
		}
	}
	// Traffic stops; every request got through, and reached the upstream
	// once.
	for i, l := range loops {
		n, bad := l.halt()
		if len(bad) != 0 {
			t.Errorf("allowed requests on %s failed: %v", names[i], bad)
		}
		totals[i] += n
	}
	for i := range hosts {
		n := 0
		for _, s := range up.Requests() {
			if strings.HasPrefix(s.Path, allowed(i)+"/") || strings.HasPrefix(s.Path, allowed(i)+"-2/") {
				n++
			}
		}
		if n != totals[i] {
			t.Errorf("upstream saw %d allowed requests from %s, the agent made %d", n, names[i], totals[i])
		}
	}

	// Each host's audit trail in the database is its file, line for line.
	for i, h := range hosts {
		var file, rows []string
		deadline := time.Now().Add(30 * time.Second)
		for {
			file, rows = auditFileKeys(t, h), auditDBKeys(t, pg, db, names[i])
			if slices.Equal(file, rows) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !slices.Equal(file, rows) {
			t.Errorf("%s: clawd_audit is not its audit file: %s", names[i], diffKeys(file, rows))
		} else {
			t.Logf("%s: its %d audit lines are in clawd_audit, each once", names[i], len(file))
		}
		// The outage's timeout is there once.
		q := fmt.Sprintf("SELECT count(*) FROM clawd_audit WHERE host = '%s' AND event = 'approval' AND entry->>'approval_id' = '%s' AND entry->>'action' = 'timeout'", names[i], ids[i])
		if got := pg.SQL(t, db, q); got != "1" {
			t.Errorf("%s's outage timeout is in clawd_audit %s times, want once", names[i], got)
		}
		n := 0
		for _, e := range h.AuditEntries() {
			if e.Event == audit.EventApproval && e.ApprovalID == ids[i] && e.Action == approval.TimedOut {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s audited its outage timeout %d times, want once", names[i], n)
		}
	}
	n := 0
	for _, e := range c.AuditEntries() {
		if e.Event == audit.EventApproval && e.ApprovalID == cutID && e.Action == approval.Expired {
			n++
		}
	}
	if n != 1 {
		t.Errorf("host-c audited the hold its crash cut short as expired %d times, want once", n)
	}
}
