package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	approvalapi "github.com/clawd-dev/clawd/approval/api"
	slackfake "github.com/clawd-dev/clawd/approval/slack/fake"
	"github.com/clawd-dev/clawd/approval/webhook"
	"github.com/clawd-dev/clawd/e2e/harness"
)

const apprSlackApprover = "U0APPROVER"

const apprPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: hold-short
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/timeout/**"]
      action: approve
      approval_timeout: 2s
    - name: approve-route
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/approve/**"]
      action: approve
    - name: allow-rest
      action: allow
`

// apprUpCount counts the requests the upstream's HTTP server saw for path.
func apprUpCount(up *harness.Upstream, path string) int {
	n := 0
	for _, s := range up.Requests() {
		if p, _, _ := strings.Cut(s.Path, "?"); p == path {
			n++
		}
	}
	return n
}

// TestApprovalEndToEnd drives held requests from an attached container
// through webhook and Slack cards, Slack callbacks, signed links, the CLI
// and the API, and a daemon restart.
func TestApprovalEndToEnd(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	rcv := apprStartReceiver(t)
	// Slack as configured before channels (approval.slack), against the
	// fake Slack: an incoming webhook for cards, signed HTTP interactivity.
	sf := slackfake.New()
	t.Cleanup(sf.Close)
	extra := fmt.Sprintf(`approval:
  webhooks:
    - url: %s
      secret: %s
  slack:
    webhook-url: %s
    api-base: %s
    signing-secret: %s
    approvers: [%s]
`, rcv.URL("/webhook"), rcv.WHSecret, sf.WebhookURL(), sf.APIBase(), slackfake.SigningSecret, apprSlackApprover)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: apprPolicy, Extra: extra})
	// Listen on every address, so the only thing between an attached
	// container and the API/metrics is clawd's forbidden list.
	cl.Stop()
	cfgB, err := os.ReadFile(cl.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(cfgB), "api-listen: 127.0.0.1:", "api-listen: 0.0.0.0:", 1)
	cfg = strings.Replace(cfg, "metrics-listen: 127.0.0.1:", "metrics-listen: 0.0.0.0:", 1)
	cfg += "public-url: http://" + cl.API + "\n"
	if err := os.WriteFile(cl.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cl.Start()
	_, apiPort, _ := strings.Cut(cl.API, ":")
	_, metricsPort, _ := strings.Cut(cl.Metrics, ":")

	tokB, err := os.ReadFile(filepath.Join(cl.StateDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	api := &approvalapi.Client{Base: "http://" + cl.API, Token: strings.TrimSpace(string(tokB)), HTTP: &http.Client{Timeout: 30 * time.Second}}
	ctx := context.Background()

	// A secret whose value must never reach a card.
	cardSecret := "card-secret-value-" + secRand(t)
	if out, err := secCLIStdin(cl, cardSecret, "secret", "set", "cardsecret", "--host", "upstream.test"); err != nil {
		t.Fatalf("secret set: %v %s", err, out)
	}

	files := map[string]string{agentBin(t): "/agent"}
	ct := ctd.Run(t, "approver-agent", harness.RunOpts{Files: files})
	cl.MustCLI("attach", ct.Name)
	upURLp := func(p string) string { return upURL(p) }
	held := func(p string, extra ...string) <-chan apprAgentResult {
		args := append([]string{"-timeout", "90s", "-X", "POST"}, extra...)
		return apprAgentAsync(ct, append(args, upURLp(p))...)
	}
	slackURL := "http://" + cl.API + "/v1/slack/interactions" // the path Slack apps were configured with before channels
	slackClick := func(act, id string) (string, error) {
		t.Helper()
		if _, err := sf.WaitCard(ctx, id, nil); err != nil {
			return "", err
		}
		return sf.ClickHTTP(ctx, slackURL, id, act, apprSlackApprover)
	}
	status := func(id string) string {
		t.Helper()
		a, err := api.Get(ctx, id)
		if err != nil {
			t.Fatalf("GET approval %s: %v", id, err)
		}
		return a.Status
	}

	t.Run("webhook card and Slack approve", func(t *testing.T) {
		const p = "/approve/slack"
		ch := held(p, "-H", "Authorization: Bearer agent-token-abcdef0123456789abcdef", "-H", "Content-Type: application/json",
			"-d", `{"title":"please merge","token":"`+cardSecret+`"}`)
		ev := rcv.waitRequested(t, p)
		d := ev.Data
		if d.Container.Name != ct.Name || d.Method != "POST" || d.URL != upURL(p) || d.Rule != "approve-route" || d.Summary == "" || d.Status != "pending" {
			t.Errorf("card content: %+v", d)
		}
		if !strings.Contains(d.Body, "please merge") {
			t.Errorf("card body preview %q lacks the request body", d.Body)
		}
		if strings.Contains(d.Body, cardSecret) || !strings.Contains(d.Body, "REDACTED") {
			t.Errorf("card body preview does not redact the secret value: %q", secRedact(d.Body, cardSecret))
		}
		if auth, ok := d.Headers["Authorization"]; !ok || strings.Contains(auth, "abcdef0123456789") {
			t.Errorf("card Authorization header is missing or not redacted: %q (all: %v)", auth, d.Headers)
		}
		if d.Links == nil || !strings.Contains(d.Links.Approve, "/v1/links/"+d.ID+"/approve") {
			t.Errorf("card links: %+v", d.Links)
		}
		if _, err := sf.WaitCard(ctx, d.ID, nil); err != nil {
			t.Fatalf("the Slack card: %v", err)
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests before the decision", n)
		}
		if reply, err := slackClick(approval.ActApprove, d.ID); err != nil || !strings.Contains(reply, "Approved") {
			t.Fatalf("slack approve: %q %v", reply, err)
		}
		a := apprAwait(t, ch)
		if a.Status != 200 || !strings.Contains(a.Body, p) {
			t.Fatalf("held request answered %+v", a)
		}
		if n := apprUpCount(up, p); n != 1 {
			t.Fatalf("upstream saw %d requests, want exactly 1", n)
		}
		u := rcv.waitUpdate(t, d.ID, webhook.EventDecided, "approved")
		if u.Data.By != "slack:"+apprSlackApprover {
			t.Errorf("decided by %q", u.Data.By)
		}
		// The Slack card is replaced through response_url, without buttons.
		if _, err := sf.WaitCard(ctx, d.ID, func(m slackfake.Message) bool {
			return len(m.Buttons) == 0 && strings.Contains(m.AllText(), apprSlackApprover)
		}); err != nil {
			t.Fatalf("the Slack card replaced through response_url: %v", err)
		}
		if v := sf.Violations(); len(v) > 0 {
			t.Errorf("payloads Slack would refuse: %v", v)
		}
		eventually(t, "the audit line of the approval", func() bool {
			for _, e := range cl.AuditEntries() {
				if e.ApprovalID == d.ID && e.By == "slack:"+apprSlackApprover {
					return true
				}
			}
			return false
		})
		// Still exactly once after everything settled.
		if n := apprUpCount(up, p); n != 1 {
			t.Fatalf("upstream saw %d requests, want exactly 1", n)
		}
	})

	t.Run("Slack deny", func(t *testing.T) {
		const p = "/approve/deny"
		ch := held(p, "-d", "drop table")
		id := rcv.waitRequested(t, p).Data.ID
		if reply, err := slackClick(approval.ActDeny, id); err != nil {
			t.Fatalf("slack deny: %q %v", reply, err)
		}
		a := apprAwait(t, ch)
		if a.Status != 403 || !strings.Contains(a.Body, `"error"`) || !strings.Contains(a.Body, "denied") {
			t.Fatalf("denied request answered %+v", a)
		}
		var j map[string]any
		if err := json.Unmarshal([]byte(a.Body), &j); err != nil {
			t.Fatalf("deny body is not JSON: %q", a.Body)
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests for a denied hold", n)
		}
		rcv.waitUpdate(t, id, webhook.EventDecided, "denied")
	})

	t.Run("timeout", func(t *testing.T) {
		const p = "/timeout/x"
		ch := held(p, "-d", "slow")
		id := rcv.waitRequested(t, p).Data.ID
		a := apprAwait(t, ch)
		if a.Status != 403 || !strings.Contains(a.Body, "approval_timeout") {
			t.Fatalf("timed-out request answered %+v", a)
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests for a timed-out hold", n)
		}
		rcv.waitUpdate(t, id, webhook.EventExpired, approval.TimedOut)
		if s := status(id); s != approval.TimedOut {
			t.Fatalf("status %q", s)
		}
	})

	t.Run("agent disconnect cancels", func(t *testing.T) {
		const p = "/approve/gone"
		ch := apprAgentAsync(ct, "-timeout", "3s", "-X", "POST", "-d", "bye", upURL(p))
		id := rcv.waitRequested(t, p).Data.ID
		r := <-ch
		if r.A.Status != 0 || r.A.Error == "" {
			t.Fatalf("agent with a short timeout got %+v (%s)", r.A, r.Out)
		}
		eventually(t, "the approval to be cancelled", func() bool { return status(id) == approval.Cancelled })
		rcv.waitUpdate(t, id, webhook.EventExpired, approval.Cancelled)
		out := cl.MustCLI("approvals")
		if strings.Contains(out, id) {
			t.Fatalf("cancelled approval still listed:\n%s", out)
		}
		// A late approval is refused and releases nothing.
		if _, err := api.Approve(ctx, id, 0); !approvalapi.IsStatus(err, 410) {
			t.Fatalf("approving a cancelled approval: %v", err)
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests", n)
		}
	})

	t.Run("CLI approve", func(t *testing.T) {
		const p = "/approve/cli"
		ch := held(p, "-d", "via cli")
		var id string
		eventually(t, "clawd approvals to list the hold", func() bool {
			out, err := cl.CLI("approvals", "-o", "json")
			if err != nil {
				return false
			}
			var list []approval.Approval
			json.Unmarshal([]byte(out), &list)
			for _, a := range list {
				if strings.HasSuffix(a.URL, p) && a.Container.Name == ct.Name {
					id = a.ID
					return true
				}
			}
			return false
		})
		if tbl := cl.MustCLI("approvals"); !strings.Contains(tbl, id) || !strings.Contains(tbl, p) {
			t.Fatalf("approvals table:\n%s", tbl)
		}
		out := cl.MustCLI("approve", id)
		if !strings.Contains(out, "approved "+id) {
			t.Fatalf("approve: %s", out)
		}
		if a := apprAwait(t, ch); a.Status != 200 || !strings.Contains(a.Body, p) {
			t.Fatalf("answered %+v", a)
		}
		if n := apprUpCount(up, p); n != 1 {
			t.Fatalf("upstream saw %d requests, want 1", n)
		}
		// Deciding again the other way is refused.
		if out, err := cl.CLI("deny", id); err == nil {
			t.Fatalf("deny after approve succeeded: %s", out)
		}
		rcv.waitUpdate(t, id, webhook.EventDecided, "approved")
	})

	t.Run("grant for 15 minutes", func(t *testing.T) {
		const p = "/approve/grant"
		ch := held(p, "-d", "g")
		id := rcv.waitRequested(t, p).Data.ID
		cl.MustCLI("approve", id, "--for", "15m")
		if a := apprAwait(t, ch); a.Status != 200 {
			t.Fatalf("answered %+v", a)
		}
		// The next identical request passes without a card.
		if a := apprAwait(t, held(p, "-d", "g")); a.Status != 200 {
			t.Fatalf("granted request answered %+v", a)
		}
		if n := apprUpCount(up, p); n != 2 {
			t.Fatalf("upstream saw %d requests, want 2", n)
		}
		if n := len(rcv.requested(p)); n != 1 {
			t.Fatalf("%d cards for %s, want 1 (the grant should skip the card)", n, p)
		}
		gs, err := api.Grants(ctx)
		if err != nil || len(gs) != 1 || gs[0].ApprovalID != id {
			t.Fatalf("grants = %+v, %v", gs, err)
		}
		if tbl := cl.MustCLI("grants"); !strings.Contains(tbl, gs[0].ID) {
			t.Fatalf("clawd grants:\n%s", tbl)
		}
		cl.MustCLI("grants", "revoke", gs[0].ID)
		if gs, _ := api.Grants(ctx); len(gs) != 0 {
			t.Fatalf("grants after revoke: %+v", gs)
		}
		// Held again: a new card; deny it.
		ch = held(p, "-d", "g")
		eventually(t, "a second card", func() bool { return len(rcv.requested(p)) == 2 })
		id2 := rcv.requested(p)[1].Data.ID
		if _, err := api.Deny(ctx, id2, "grant revoked"); err != nil {
			t.Fatal(err)
		}
		if a := apprAwait(t, ch); a.Status != 403 || !strings.Contains(a.Body, "grant revoked") {
			t.Fatalf("after revoke answered %+v", a)
		}
		if n := apprUpCount(up, p); n != 2 {
			t.Fatalf("upstream saw %d requests, want 2", n)
		}
	})

	t.Run("callback security", func(t *testing.T) {
		// A decided approval (from the CLI subtest) and a pending one.
		decided := rcv.requested("/approve/cli")[0].Data
		const p = "/approve/sec"
		ch := held(p, "-d", "secure")
		pend := rcv.waitRequested(t, p).Data
		id := pend.ID
		now := time.Now().Unix()
		if _, err := sf.WaitCard(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		genuine, err := sf.SignedClick(id, approval.ActApprove, apprSlackApprover, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		// Bad signature.
		if code, _, _ := sf.Send(ctx, slackURL, genuine.WithBadSignature()); code == 200 {
			t.Errorf("bad signature accepted")
		}
		// Stale timestamp, correctly signed.
		stale, _ := sf.SignedClick(id, approval.ActApprove, apprSlackApprover, time.Now().Add(-10*time.Minute))
		if code, _, _ := sf.Send(ctx, slackURL, stale); code == 200 {
			t.Errorf("stale timestamp accepted")
		}
		// A user who is not an approver.
		if reply, err := sf.ClickHTTP(ctx, slackURL, id, approval.ActApprove, "U0INTRUDER"); err != nil || !strings.Contains(reply, "not asked") {
			t.Errorf("non-approver: %q %v", reply, err)
		}
		// Replaying that exact signed request is refused before anything else.
		if last, ok := sf.LastHTTP(); !ok {
			t.Fatal("no request to replay")
		} else if code, body, _ := sf.Send(ctx, slackURL, last); code == 200 {
			t.Errorf("replay: %d %s", code, body)
		}
		// Already decided: nothing changes, and the clicker is told.
		if reply, err := sf.ClickHTTP(ctx, slackURL, decided.ID, approval.ActDeny, apprSlackApprover); err != nil || !strings.Contains(reply, "Already approved") {
			t.Errorf("already decided: %q %v", reply, err)
		}
		if s := status(decided.ID); s != "approved" {
			t.Errorf("decided approval changed to %q", s)
		}
		// Signed links: the link of another approval does not work for this
		// one, a tampered signature neither, and GET never decides.
		hc := &http.Client{Timeout: 10 * time.Second}
		pendLink, _ := url.Parse(pend.Links.Approve)
		q := pendLink.Query()
		otherLink := strings.Replace(decided.Links.Approve, "/links/"+decided.ID+"/", "/links/"+id+"/", 1)
		for name, u := range map[string]string{
			"link of another approval":  otherLink,
			"tampered signature":        strings.Replace(pend.Links.Approve, "sig=", "sig=00", 1),
			"deny link used to approve": strings.Replace(pend.Links.Deny, "/deny?", "/approve?", 1),
			"changed expiry":            strings.Replace(pend.Links.Approve, "exp="+q.Get("exp"), "exp="+strconv.FormatInt(now+86400*30, 10), 1),
		} {
			resp, err := hc.Post(u, "application/x-www-form-urlencoded", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 403 {
				t.Errorf("%s: POST answered %d, want 403", name, resp.StatusCode)
			}
		}
		resp, err := hc.Get(pend.Links.Approve)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET of a valid link: %d", resp.StatusCode)
		}
		if s := status(id); s != "pending" {
			t.Fatalf("after refused callbacks the approval is %q", s)
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests after refused callbacks", n)
		}
		// The genuine link decides (deny).
		resp, err = hc.Post(pend.Links.Deny, "application/x-www-form-urlencoded", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("valid deny link: %d", resp.StatusCode)
		}
		if a := apprAwait(t, ch); a.Status != 403 {
			t.Fatalf("answered %+v", a)
		}
		// A decided link cannot be used again the other way.
		resp, err = hc.Post(pend.Links.Approve, "application/x-www-form-urlencoded", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("approve link after deny answered 200")
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests", n)
		}
	})

	t.Run("API and metrics unreachable from the container", func(t *testing.T) {
		// Reachable from the host on the upstream-link address: the
		// listeners really are there.
		hc := &http.Client{Timeout: 10 * time.Second}
		for _, u := range []string{"http://198.51.100.1:" + apiPort + "/healthz", "http://198.51.100.1:" + metricsPort + "/metrics"} {
			resp, err := hc.Get(u)
			if err != nil {
				t.Fatalf("host GET %s: %v", u, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("host GET %s: %d", u, resp.StatusCode)
			}
		}
		for _, port := range []string{apiPort, metricsPort} {
			for _, host := range []string{ct.HostIPv4.String(), "198.51.100.1", "[" + ct.HostIPv6.String() + "]", "[2001:db8::1]", "127.0.0.1"} {
				for _, path := range []string{"/healthz", "/metrics", "/v1/approvals"} {
					u := "http://" + host + ":" + port + path
					a := agent(t, ct, "-timeout", "10s", "-H", "Authorization: Bearer "+api.Token, u)
					if a.Status == 200 || strings.Contains(a.Body, "# HELP") || strings.Contains(a.Body, `"ok":true`) || strings.Contains(a.Body, `"approvals":[`) {
						t.Errorf("%s from the container: %d %.200s", u, a.Status, a.Body)
					}
					if host != "127.0.0.1" && (a.Status != 403 || !strings.Contains(a.Body, "clawd-internal")) {
						t.Errorf("%s from the container: want 403 by rule clawd-internal, got %d %.200s %s", u, a.Status, a.Body, a.Error)
					}
				}
			}
		}
	})

	t.Run("200 concurrent holds", func(t *testing.T) {
		const nCt, perCt = 4, 50
		var cts []*harness.Container
		for i := 0; i < nCt; i++ {
			c := ctd.Run(t, fmt.Sprintf("herd%d", i), harness.RunOpts{Files: files})
			cl.MustCLI("attach", c.Name)
			cts = append(cts, c)
		}
		rssBefore := apprDaemonRSS(t, cl)
		outs := make([]string, nCt)
		var wg sync.WaitGroup
		for i, c := range cts {
			wg.Add(1)
			go func(i int, c *harness.Container) {
				defer wg.Done()
				var s strings.Builder
				for j := 0; j < perCt; j++ {
					fmt.Fprintf(&s, "/agent -timeout 100s -X POST -d r%d %s > /tmp/h%d 2>&1 & ", j, upURL(fmt.Sprintf("/approve/herd/c%d/r%d", i, j)), j)
				}
				s.WriteString("wait; for f in /tmp/h*; do cat $f; echo; done")
				cctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
				defer cancel()
				out, errOut, _, err := c.Exec(cctx, "sh", "-c", s.String())
				if err != nil {
					out += err.Error()
				}
				outs[i] = out + errOut
			}(i, c)
		}
		ids := map[string]string{} // path -> id
		eventually(t, "200 pending approvals", func() bool {
			list, err := api.List(ctx, "")
			if err != nil {
				return false
			}
			for _, a := range list {
				if u, err := url.Parse(a.URL); err == nil && strings.HasPrefix(u.Path, "/approve/herd/") {
					ids[u.Path] = a.ID
				}
			}
			return len(ids) == nCt*perCt
		})
		var dwg sync.WaitGroup
		errs := make(chan error, len(ids))
		sem := make(chan struct{}, 16)
		for p, id := range ids {
			var j int
			fmt.Sscanf(p[strings.LastIndex(p, "/r")+2:], "%d", &j)
			dwg.Add(1)
			go func(id string, approve bool) {
				defer dwg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				var err error
				if approve {
					_, err = api.Approve(ctx, id, 0)
				} else {
					_, err = api.Deny(ctx, id, "herd-deny")
				}
				if err != nil {
					errs <- err
				}
			}(id, j%2 == 0)
		}
		dwg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("decision: %v", err)
		}
		wg.Wait()
		for i := 0; i < nCt; i++ {
			got := map[string]AgentAnswer{}
			for _, line := range strings.Split(outs[i], "\n") {
				var a AgentAnswer
				if json.Unmarshal([]byte(line), &a) == nil {
					if a.Status == 200 {
						var s harness.Seen
						json.Unmarshal([]byte(a.Body), &s)
						got[s.Path] = a
					} else if a.Status == 403 && strings.Contains(a.Body, "herd-deny") {
						got[fmt.Sprintf("denied-%d", len(got))] = a
					}
				}
			}
			approved, denied := 0, 0
			for k := range got {
				if strings.HasPrefix(k, "denied-") {
					denied++
				} else {
					approved++
				}
			}
			if approved != perCt/2 || denied != perCt/2 {
				t.Errorf("container %d: %d approved and %d denied answers, want %d each\n%.2000s", i, approved, denied, perCt/2, outs[i])
			}
			for j := 0; j < perCt; j++ {
				p := fmt.Sprintf("/approve/herd/c%d/r%d", i, j)
				want := 0
				if j%2 == 0 {
					want = 1
					if _, ok := got[p]; !ok {
						t.Errorf("%s: approved but the agent got no 200 for it", p)
					}
				}
				if n := apprUpCount(up, p); n != want {
					t.Errorf("%s: upstream saw %d, want %d", p, n, want)
				}
			}
		}
		if list, _ := api.List(ctx, ""); len(list) != 0 {
			t.Errorf("%d approvals still pending", len(list))
		}
		rssAfter := apprDaemonRSS(t, cl)
		t.Logf("daemon RSS before %d KiB, after %d KiB", rssBefore, rssAfter)
		if rssAfter > rssBefore+128*1024 {
			t.Errorf("daemon RSS grew from %d KiB to %d KiB over 200 holds", rssBefore, rssAfter)
		}
	})

	t.Run("restart: holds get 503, grants survive", func(t *testing.T) {
		// A grant from the Slack "Approve 15 min" button.
		const gp = "/approve/keep"
		ch := held(gp, "-d", "k")
		gid := rcv.waitRequested(t, gp).Data.ID
		if reply, err := slackClick(approval.ActApproveFor, gid); err != nil {
			t.Fatalf("slack approve 15m: %q %v", reply, err)
		}
		if a := apprAwait(t, ch); a.Status != 200 {
			t.Fatalf("answered %+v", a)
		}
		// A hold pending while the daemon stops.
		const p = "/approve/restart"
		ch = held(p, "-d", "r")
		id := rcv.waitRequested(t, p).Data.ID
		cl.Stop()
		a := apprAwait(t, ch)
		if a.Status != 503 || !strings.Contains(a.Body, "clawd_restarting") || len(a.Headers["Retry-After"]) == 0 {
			t.Fatalf("held request on SIGTERM answered %+v", a)
		}
		if n := apprUpCount(up, p); n != 0 {
			t.Fatalf("upstream saw %d requests", n)
		}
		rcv.waitUpdate(t, id, webhook.EventExpired, approval.Expired)
		cl.Start()
		if s := status(id); s != approval.Expired {
			t.Fatalf("after restart the approval is %q", s)
		}
		gs, err := api.Grants(ctx)
		if err != nil || len(gs) != 1 || gs[0].ApprovalID != gid {
			t.Fatalf("grants after restart: %+v, %v", gs, err)
		}
		if a := apprAwait(t, held(gp, "-d", "k")); a.Status != 200 {
			t.Fatalf("granted request after restart answered %+v", a)
		}
		if n := len(rcv.requested(gp)); n != 1 {
			t.Fatalf("%d cards for %s, want 1", n, gp)
		}
		if n := apprUpCount(up, gp); n != 2 {
			t.Fatalf("upstream saw %d requests for %s, want 2", n, gp)
		}
	})

	t.Run("no secret in cards, logs, audit or metrics", func(t *testing.T) {
		logB, _ := os.ReadFile(cl.LogPath)
		auditB, _ := os.ReadFile(cl.Audit)
		cards := rcv.AllText()
		for _, m := range sf.Messages() {
			cards += m.AllText()
		}
		if !strings.Contains(cards, "REDACTED") {
			t.Errorf("no redaction marker in any card")
		}
		secNoLeak(t, []string{cardSecret}, map[string]string{
			"daemon log": string(logB), "audit log": string(auditB), "metrics": secScrapeMetrics(t, cl), "approval cards": cards,
		})
		// The agent's own bearer token is redacted on cards too.
		secNoLeak(t, []string{"abcdef0123456789abcdef"}, map[string]string{"approval cards": cards})
	})
}

// apprDaemonRSS reads the daemon's resident set size in KiB.
func apprDaemonRSS(t testing.TB, c *Clawd) int {
	t.Helper()
	c.mu.Lock()
	pid := c.cmd.Process.Pid
	c.mu.Unlock()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
