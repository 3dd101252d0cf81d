package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

const faultPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: flt-allow
      cidrs: [198.51.100.10/32]
      ports: [8080, 8090, 8091]
      paths: ["/allow/**"]
      action: allow
    - name: flt-approve
      cidrs: [198.51.100.10/32]
      ports: [8080, 8090]
      paths: ["/approve/**"]
      action: approve
`

// fltPeek is the daemon's peek-timeout in tests where many clients connect
// at once: the suite's 300ms can pass before a starved client writes its
// request line, and the connection is then decided as raw TCP.
const fltPeek = "3s"

// fltSink starts an HTTP server in the upstream netns on :8090 that reads
// the whole request body and answers its length and SHA-256.
func fltSink(t *testing.T, up *harness.Upstream) (string, func(prefix string) int) {
	t.Helper()
	ln, err := up.Listen("tcp", fmt.Sprintf("%s:8090", harness.UpstreamIPv4))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var paths []string
	seen := func(prefix string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, p := range paths {
			if strings.HasPrefix(p, prefix) {
				n++
			}
		}
		return n
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "n": n, "sha256": hex.EncodeToString(h.Sum(nil)), "err": fmt.Sprint(err)})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return fmt.Sprintf("http://%s:8090", harness.UpstreamIPv4), seen
}

// fltHangSink starts an HTTP server in the upstream netns on addr whose
// answers announce 1000 bytes, send 10 and then wait until the test ends:
// responses that are in flight for as long as the test wants. inflight
// counts the requests it is sitting on.
func fltHangSink(t *testing.T, up *harness.Upstream, port int) (string, *atomic.Int64) {
	t.Helper()
	ln, err := up.Listen("tcp", fmt.Sprintf("%s:%d", harness.UpstreamIPv4, port))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var inflight atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		io.WriteString(w, "0123456789")
		w.(http.Flusher).Flush()
		inflight.Add(1)
		defer inflight.Add(-1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(release); srv.Close() })
	return fmt.Sprintf("http://%s:%d", harness.UpstreamIPv4, port), &inflight
}

func fltSeen(up *harness.Upstream, prefix string) int {
	n := 0
	for _, s := range up.Requests() {
		if strings.HasPrefix(s.Path, prefix) {
			n++
		}
	}
	return n
}

// TestFaultsAbuseKeepsClawdResponsive: slowloris connections, 1 and 2 MiB
// headers, a 64 MiB upload, a 32 MiB body for approval and a flood of held
// requests beyond the pending limit, all from one container at once. The
// limits answer as documented and a bystander container and the control
// socket are served meanwhile.
func TestFaultsAbuseKeepsClawdResponsive(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	sink, sinkSeen := fltSink(t, up)
	t.Setenv("CLAWD_PEEK_TIMEOUT", fltPeek) // many clients connect at once
	cl := StartClawd(t, ctd, ClawdOpts{Policy: faultPolicy, Extra: "approval:\n  max-pending-per-container: 20\n  max-pending: 25\n"})
	api := ldAPI(t, cl)
	files := map[string]string{loadgenBin(t): "/loadgen"}
	abuser := ctd.Run(t, "abuser", harness.RunOpts{Files: files})
	bystander := ctd.Run(t, "bystander", harness.RunOpts{Files: files})
	cl.MustCLI("attach", abuser.Name)
	cl.MustCLI("attach", bystander.Name)
	up.Reset()

	hostPort := fmt.Sprintf("%s:%d", harness.UpstreamIPv4, harness.UpstreamHTTPPort)
	// 200 slowloris connections: a request line, then one header byte a second.
	slow := ldAsync(t, abuser, 3*time.Minute, "-mode", "slowloris", "-n", "200", "-addr", hostPort,
		"-line", "GET /allow/slow HTTP/1.1\r\nHost: "+hostPort+"\r\n", "-every", "1s", "-for", "100s")
	// 60 distinct held requests; the per-container limit is 20.
	flood := ldAsync(t, abuser, 3*time.Minute, "-n", "60", "-timeout", "120s", "-X", "POST", "-url", upURL("/approve/flood{i}"))
	// 64 MiB upload to an allow rule: streamed through, every byte arrives.
	upload := ldAsync(t, abuser, 3*time.Minute, "-n", "1", "-timeout", "120s", "-X", "POST", "-body-size", strconv.Itoa(64<<20), "-body", "-url", sink+"/allow/upload")
	// 32 MiB body for an approve rule: over the hold buffer, refused before
	// the body is sent (the client asks with Expect: 100-continue, as curl
	// does for large bodies).
	bigHold := ldAsync(t, abuser, 3*time.Minute, "-n", "1", "-timeout", "120s", "-X", "POST", "-expect100", "-body-size", strconv.Itoa(32<<20), "-url", sink+"/approve/big")
	// Without Expect the agent is writing when the 413 comes: clawd reads
	// the rest of the body (up to 64 MiB) so that the agent, which reads
	// only once it has sent everything, gets the 413 and not a reset.
	bigHold2 := ldAsync(t, abuser, 3*time.Minute, "-n", "1", "-timeout", "120s", "-X", "POST", "-body-size", strconv.Itoa(32<<20), "-url", sink+"/approve/big2")
	// A 1 MiB header.
	bigHdr := ldAsync(t, abuser, 3*time.Minute, "-n", "1", "-timeout", "60s", "-header-size", strconv.Itoa(1<<20), "-url", upURL("/allow/bighdr"))
	hugeHdr := ldAsync(t, abuser, 3*time.Minute, "-n", "1", "-timeout", "60s", "-header-size", strconv.Itoa(2<<20), "-url", upURL("/allow/hugehdr"))

	// The flood fills the limit: 20 held, the other 40 answered at once.
	var ids []string
	ldPoll(t, time.Minute, "20 held flood requests", func() bool {
		l, err := api.List(context.Background(), abuser.Name)
		if err != nil {
			return false
		}
		ids = ids[:0]
		for _, a := range l {
			if strings.HasPrefix(a.Path, "/approve/flood") {
				ids = append(ids, a.ID)
			}
		}
		return len(ids) == 20
	})
	// While the slow connections and held requests sit on clawd, the
	// bystander and the control socket are served.
	for i := 0; i < 3; i++ {
		res, err := ldRun(t, bystander, time.Minute, "-n", "5", "-timeout", "30s", "-url", upURL(fmt.Sprintf("/allow/bystander%d-{i}", i)))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Status != 200 {
				t.Fatalf("bystander request during the abuse: %+v", r)
			}
		}
		out := cl.MustCLI("ls")
		if !strings.Contains(out, bystander.Name) || !strings.Contains(out, abuser.Name) {
			t.Fatalf("clawd ls during the abuse:\n%s", out)
		}
		st := cl.MustCLI("status")
		if !strings.Contains(st, "pending approvals: 20") {
			t.Fatalf("clawd status during the abuse:\n%s", st)
		}
		time.Sleep(time.Second)
	}
	// The global limit (25) leaves the bystander 5 holds of its own.
	byHold := ldAsync(t, bystander, 3*time.Minute, "-n", "10", "-timeout", "120s", "-X", "POST", "-url", upURL("/approve/by{i}"))
	var byIDs []string
	ldPoll(t, time.Minute, "5 held bystander requests", func() bool {
		l, err := api.List(context.Background(), bystander.Name)
		if err != nil {
			return false
		}
		byIDs = byIDs[:0]
		for _, a := range l {
			byIDs = append(byIDs, a.ID)
		}
		return len(byIDs) == 5
	})
	for _, id := range byIDs {
		if _, err := api.Approve(context.Background(), id, 0); err != nil {
			t.Fatalf("approve %s: %v", id, err)
		}
	}
	approved, limitedBy := 0, 0
	for i, r := range ldWait(t, byHold, "bystander holds") {
		switch {
		case r.Status == 200:
			approved++
		case r.Status == 429 && r.Error == "approval_limit":
			limitedBy++
		default:
			t.Errorf("bystander held request %d: %+v", i, r)
		}
	}
	if approved != 5 || limitedBy != 5 || fltSeen(up, "/approve/by") != 5 {
		t.Errorf("bystander holds under the global limit: %d approved, %d limited, upstream saw %d; want 5, 5, 5", approved, limitedBy, fltSeen(up, "/approve/by"))
	}
	if got := fltSeen(up, "/allow/bystander"); got != 15 {
		t.Errorf("upstream saw %d bystander requests, want 15", got)
	}

	// Large bodies and headers.
	if r := ldWait(t, upload, "64 MiB upload")[0]; r.Status != 200 || r.Err != "" {
		t.Errorf("64 MiB upload: %+v", r)
	} else {
		var got struct {
			N      int64  `json:"n"`
			SHA256 string `json:"sha256"`
		}
		if err := json.Unmarshal([]byte(r.Body), &got); err != nil || got.N != 64<<20 || got.SHA256 != r.SHA {
			t.Errorf("upstream got %d bytes sha %s (%v), the agent sent %d sha %s", got.N, got.SHA256, err, r.Sent, r.SHA)
		}
	}
	if r := ldWait(t, bigHold, "32 MiB body to approve")[0]; r.Status != 413 || r.Error != "body_too_large" || r.Sent != 0 {
		t.Errorf("32 MiB body to an approve rule: %+v, want 413 body_too_large before any body byte", r)
	}
	if r := ldWait(t, bigHold2, "32 MiB body to approve, no Expect")[0]; r.Status != 413 || r.Error != "body_too_large" {
		t.Errorf("32 MiB body to an approve rule without Expect: %+v, want 413 body_too_large", r)
	}
	// net/http's 1 MiB header limit: a 1 MiB header is forwarded intact,
	// a 2 MiB one is refused before anything goes upstream.
	if r := ldWait(t, bigHdr, "1 MiB header")[0]; r.Status != 200 {
		t.Errorf("1 MiB header: %+v, want 200", r)
	}
	for _, s := range up.Requests() {
		if s.Path == "/allow/bighdr" {
			if h := s.Headers["X-Big"]; len(h) != 1 || len(h[0]) != 1<<20 {
				t.Errorf("upstream got the 1 MiB header cut to %d values / %d bytes", len(h), len(strings.Join(h, "")))
			}
		}
	}
	if n := fltSeen(up, "/allow/bighdr"); n != 1 {
		t.Errorf("the 1 MiB header request reached the upstream %d times, want 1", n)
	}
	if r := ldWait(t, hugeHdr, "2 MiB header")[0]; r.Status != 431 {
		t.Errorf("2 MiB header: %+v, want 431", r)
	}
	if n := fltSeen(up, "/allow/hugehdr"); n != 0 {
		t.Errorf("the 2 MiB header request reached the upstream %d times", n)
	}

	// Deny the held ones from the CLI; every flood request has its answer.
	for _, id := range ids {
		if out := cl.MustCLI("deny", id, "--reason", "flood"); !strings.Contains(out, id) {
			t.Fatalf("deny %s: %s", id, out)
		}
	}
	fl := ldWait(t, flood, "flood")
	limited, denied := 0, 0
	for i := 0; i < 60; i++ {
		r := fl[i]
		switch {
		case r.Status == 429 && r.Error == "approval_limit":
			limited++
		case r.Status == 403 && r.Error == "denied_by_approver":
			denied++
		default:
			t.Errorf("flood request %d: %+v", i, r)
		}
	}
	if limited != 40 || denied != 20 {
		t.Errorf("flood: %d approval_limit, %d denied by approver; want 40 and 20", limited, denied)
	}
	if n := fltSeen(up, "/approve/flood") + sinkSeen("/approve/big"); n != 0 {
		t.Errorf("upstream saw %d held requests that were never approved", n)
	}

	// Every slowloris connection was cut by clawd's header read timeout,
	// well before the client's own bound, and none reached the upstream.
	sl := ldWait(t, slow, "slowloris")
	closed := 0
	line := int64(len("GET /allow/slow HTTP/1.1\r\nHost: " + hostPort + "\r\n"))
	for _, r := range sl {
		// Cut after trickling for a while, not refused at once.
		if r.Closed && r.Sent > line {
			closed++
		}
	}
	if len(sl) != 200 || closed != 200 {
		t.Errorf("slowloris: %d of %d connections closed by clawd", closed, len(sl))
	}
	if n := fltSeen(up, "/allow/slow"); n != 0 {
		t.Errorf("upstream saw %d slowloris requests", n)
	}
	// And the daemon still answers.
	res, err := ldRun(t, bystander, time.Minute, "-n", "1", "-timeout", "30s", "-url", upURL("/allow/after"))
	if err != nil || res[0].Status != 200 {
		t.Fatalf("request after the abuse: %+v %v", res, err)
	}
}

// fltGet runs n GETs of url (with {i}) in ct and fails on transport errors.
func fltGet(t *testing.T, ct *harness.Container, n int, url string) map[int]ldResult {
	t.Helper()
	res, err := ldRun(t, ct, 2*time.Minute, "-n", strconv.Itoa(n), "-timeout", "30s", "-url", url)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if res[i].Err != "" {
			t.Fatalf("GET %s #%d: %s", url, i, res[i].Err)
		}
	}
	return res
}

func fltWant(t *testing.T, ct *harness.Container, url string, status int, errField string) {
	t.Helper()
	r := fltGet(t, ct, 1, url)[0]
	if r.Status != status || r.Error != errField {
		t.Fatalf("GET %s: %d %q, want %d %q", url, r.Status, r.Error, status, errField)
	}
}

func fltAudited(cl *Clawd) map[string]int {
	out := map[string]int{}
	for _, e := range cl.AuditEntries() {
		if e.Event == "decision" {
			out[e.Path]++
		}
	}
	return out
}

// TestFaultsKillAndRestart: SIGKILL under load fails closed and loses
// nothing that completed; a restarted daemon keeps its attachments and
// grants; a containerd restart is survived.
func TestFaultsKillAndRestart(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	t.Setenv("CLAWD_PEEK_TIMEOUT", fltPeek) // many clients connect at once
	cl := StartClawd(t, ctd, ClawdOpts{Policy: faultPolicy})
	api := ldAPI(t, cl)
	files := map[string]string{loadgenBin(t): "/loadgen"}
	ct := ctd.Run(t, "survivor", harness.RunOpts{Files: files})
	cl.MustCLI("attach", ct.Name)
	up.Reset()

	// A grant, made before the crash.
	held := ldAsync(t, ct, 2*time.Minute, "-n", "1", "-timeout", "60s", "-X", "POST", "-url", upURL("/approve/grant"))
	var id string
	ldPoll(t, 30*time.Second, "the held request", func() bool {
		l, err := api.List(context.Background(), "")
		if err == nil && len(l) == 1 {
			id = l[0].ID
		}
		return id != ""
	})
	cl.MustCLI("approve", id, "--for", "15m")
	if r := ldWait(t, held, "held request")[0]; r.Status != 200 {
		t.Fatalf("approved request: %+v", r)
	}
	grants, err := api.Grants(context.Background())
	if err != nil || len(grants) != 1 {
		t.Fatalf("grants: %+v %v", grants, err)
	}
	grantID := grants[0].ID

	// Requests that completed before the crash.
	pre := fltGet(t, ct, 40, upURL("/allow/pre{i}"))
	for i, r := range pre {
		if r.Status != 200 {
			t.Fatalf("request %d before the crash: %+v", i, r)
		}
	}

	// SIGKILL while 200 requests are in flight: allowed ones and held ones,
	// and 20 allowed responses half relayed.
	hang, inflight := fltHangSink(t, up, 8091)
	streams := ldAsync(t, ct, 2*time.Minute, "-n", "20", "-timeout", "60s", "-url", hang+"/allow/stream{i}")
	load := ldAsync(t, ct, 2*time.Minute, "-n", "200", "-timeout", "30s", "-X", "POST",
		"-url", upURL("/allow/kill{i}"), "-url", upURL("/approve/kill{i}"))
	ldPoll(t, time.Minute, "load reaching the upstream and holds", func() bool {
		l, err := api.List(context.Background(), "")
		return err == nil && len(l) >= 20 && fltSeen(up, "/allow/kill") >= 20 && inflight.Load() == 20
	})
	cl.Kill()
	// A response cut by the crash is an error for the agent, never a
	// complete answer.
	for i, r := range ldWait(t, streams, "half-relayed responses") {
		if r.Err == "" {
			t.Errorf("response %d cut by the kill looked complete to the agent: %+v", i, r)
		}
	}
	res := ldWait(t, load, "load during the kill")
	done := 0
	for i, r := range res {
		if r.Status == 200 && r.Err == "" {
			done++
		}
		// A held request never got an answer, and certainly not a pass.
		if i%2 == 1 && r.Err == "" {
			t.Errorf("held request %d got an answer although clawd was killed: %+v", i, r)
		}
	}
	t.Logf("%d of 100 allowed requests completed before the kill", done)
	if n := fltSeen(up, "/approve/kill"); n != 0 {
		t.Errorf("upstream saw %d held requests", n)
	}
	// Without a daemon the container is cut off: nothing reaches the upstream.
	dead, err := ldRun(t, ct, time.Minute, "-n", "3", "-timeout", "10s", "-url", upURL("/allow/dead{i}"))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range dead {
		if r.Err == "" {
			t.Errorf("request %d with clawd dead got an answer: %+v", i, r)
		}
	}
	if n := fltSeen(up, "/allow/dead"); n != 0 {
		t.Errorf("upstream saw %d requests while clawd was dead", n)
	}
	// Nothing the agent saw complete is missing from the audit log.
	audited := fltAudited(cl)
	for i, r := range pre {
		if p := fmt.Sprintf("/allow/pre%d", i); r.Status == 200 && audited[p] != 1 {
			t.Errorf("completed request %s has %d audit lines", p, audited[p])
		}
	}
	for i, r := range res {
		if p := fmt.Sprintf("/allow/kill%d", i); r.Status == 200 && r.Err == "" && audited[p] != 1 {
			t.Errorf("request %s completed before the kill but has %d audit lines", p, audited[p])
		}
	}

	// Restart: attachment, grant and service are back.
	cl.Start()
	if l := cl.List(); len(l) != 1 || l[0].Container.Name != ct.Name {
		t.Fatalf("attachments after restart: %+v", l)
	}
	if out := cl.MustCLI("grants"); !strings.Contains(out, grantID) {
		t.Fatalf("grant %s lost in the crash:\n%s", grantID, out)
	}
	// The grant still answers for the same request, without a new hold
	// (a hold would outlast the 15s client bound).
	r := fltGet(t, ct, 1, upURL("/allow/back"))[0]
	if r.Status != 200 {
		t.Fatalf("allowed request after restart: %+v", r)
	}
	gr, err := ldRun(t, ct, time.Minute, "-n", "1", "-timeout", "15s", "-X", "POST", "-url", upURL("/approve/grant"))
	if err != nil || gr[0].Status != 200 {
		t.Fatalf("granted request after restart: %+v %v", gr, err)
	}
	// The holds the crash interrupted are no longer pending; the granted
	// request was not held again.
	if l, err := api.List(context.Background(), ""); err != nil || len(l) != 0 {
		t.Fatalf("pending after restart: %+v %v", l, err)
	}
	fltWant(t, ct, upURL("/other/back"), 403, "blocked_by_policy")

	// containerd restarts under the daemon: attachments stay, enforcement
	// continues and labelled containers created afterwards are attached.
	ctd.Restart(t)
	fltWant(t, ct, upURL("/allow/after-ctd"), 200, "")
	fltWant(t, ct, upURL("/other/after-ctd"), 403, "blocked_by_policy")
	late := ctd.Run(t, "late", harness.RunOpts{Files: files, Labels: map[string]string{"clawd.attach": "true"}})
	ldPoll(t, 60*time.Second, "the labelled container attached after the containerd restart", func() bool {
		for _, a := range cl.List() {
			if a.Container.Name == late.Name {
				return true
			}
		}
		return false
	})
	fltWant(t, late, upURL("/other/late"), 403, "blocked_by_policy")
	if n := fltSeen(up, "/other/"); n != 0 {
		t.Errorf("upstream saw %d denied requests", n)
	}
	if l := cl.List(); len(l) != 2 {
		t.Errorf("attachments after the containerd restart: %+v", l)
	}
}

const fltPolicyWider = `version: 1
default:
  default_action: deny
  rules:
    - name: flt-allow
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/allow/**", "/other/**"]
      action: allow
`

// TestFaultsPolicyFileBroken: a deleted, truncated or emptied policy file
// never replaces the running policy; status shows why; a good file recovers.
func TestFaultsPolicyFileBroken(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: faultPolicy})
	ct := ctd.Run(t, "policy-victim", harness.RunOpts{Files: map[string]string{loadgenBin(t): "/loadgen"}})
	cl.MustCLI("attach", ct.Name)
	up.Reset()
	fltWant(t, ct, upURL("/allow/p0"), 200, "")
	fltWant(t, ct, upURL("/other/p0"), 403, "blocked_by_policy")

	status := func() string { out, _ := cl.CLI("status"); return out }
	for i, breakIt := range []struct {
		name string
		do   func()
	}{
		{"deleted", func() { os.Remove(cl.Policy) }},
		{"truncated", func() { os.WriteFile(cl.Policy, []byte(faultPolicy[:len(faultPolicy)/2]), 0o600) }},
		{"emptied", func() { os.WriteFile(cl.Policy, nil, 0o600) }},
	} {
		t.Run(breakIt.name, func(t *testing.T) {
			before := status()
			breakIt.do()
			// The watcher picks it up too; an explicit reload says so at once.
			if out, err := cl.CLI("policy", "reload"); err == nil || !strings.Contains(out, "previous policy stays in force") {
				t.Fatalf("policy reload of a %s file: %v %s", breakIt.name, err, out)
			}
			var st string
			eventually(t, "clawd status showing the policy error", func() bool {
				st = status()
				return strings.Contains(st, "policy error:") && st != before
			})
			t.Logf("status:\n%s", st)
			fltWant(t, ct, upURL(fmt.Sprintf("/allow/p%d", i+1)), 200, "")
			fltWant(t, ct, upURL(fmt.Sprintf("/other/p%d", i+1)), 403, "blocked_by_policy")
		})
	}
	// A good file recovers, and is the new policy.
	cl.WritePolicy(fltPolicyWider)
	eventually(t, "the restored policy in force", func() bool {
		r, err := ldRun(t, ct, time.Minute, "-n", "1", "-timeout", "10s", "-url", upURL("/other/restored"))
		return err == nil && r[0].Status == 200
	})
	if st := status(); strings.Contains(st, "policy error") {
		t.Fatalf("status after restoring the policy:\n%s", st)
	}
	if n := fltSeen(up, "/other/p"); n != 0 {
		t.Errorf("upstream saw %d requests the old policy denies", n)
	}
}

// TestFaultsAuditDiskFull: with the audit log's file system full, requests
// still get decisions and clawd logs the write errors; once space is freed,
// new audit lines appear and every line in the log is whole.
func TestFaultsAuditDiskFull(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: faultPolicy})
	ct := ctd.Run(t, "audit-victim", harness.RunOpts{Files: map[string]string{loadgenBin(t): "/loadgen"}})
	cl.MustCLI("attach", ct.Name)

	fs := filepath.Join(cl.Dir, "auditfs")
	if err := os.Mkdir(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", fs).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fs).Run() })
	// Move the audit log onto the small file system; SIGHUP reopens it.
	os.Remove(cl.Audit)
	if err := os.Symlink(filepath.Join(fs, "audit.log"), cl.Audit); err != nil {
		t.Fatal(err)
	}
	cl.HUP()
	eventually(t, "audit lines on the small file system", func() bool {
		fltGet(t, ct, 1, upURL("/allow/probe"))
		return fltAudited(cl)["/allow/probe"] > 0
	})

	// Fill it.
	filler := filepath.Join(fs, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 4096)
	for i := 0; i < 1024; i++ { // at most 4 MiB; the file system holds 256k
		if _, err := f.Write(block); err != nil {
			break
		}
	}
	f.Close()
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(fs, &sfs); err != nil || sfs.Bavail != 0 {
		t.Fatalf("audit file system not full: %+v %v", sfs, err)
	}
	up.Reset()
	res := fltGet(t, ct, 30, upURL("/allow/full{i}"))
	for i, r := range res {
		if r.Status != 200 {
			t.Errorf("request %d with the audit disk full: %+v", i, r)
		}
	}
	fltWant(t, ct, upURL("/other/full"), 403, "blocked_by_policy")
	if n := fltSeen(up, "/allow/full"); n != 30 {
		t.Errorf("upstream saw %d of 30 allowed requests", n)
	}
	eventually(t, "the daemon logging the audit write errors", func() bool {
		for _, l := range cl.LogLines() {
			if l["msg"] == "audit log write failed" {
				return true
			}
		}
		return false
	})
	// Free the space: new decisions are audited again, in whole lines.
	os.Remove(filler)
	eventually(t, "audit lines after freeing space", func() bool {
		fltGet(t, ct, 3, upURL("/allow/after{i}"))
		a := fltAudited(cl)
		return a["/allow/after0"] > 0 && a["/allow/after1"] > 0 && a["/allow/after2"] > 0
	})
	fltWant(t, ct, upURL("/other/after"), 403, "blocked_by_policy")
	eventually(t, "the denial audited", func() bool { return fltAudited(cl)["/other/after"] == 1 })
	// AuditEntries fails the test on any line that is not whole JSON.
	cl.AuditEntries()
}

// TestFaultsConnectionCapPerContainer: one container holding its whole
// connection budget (max-conns-per-container) gets further connections
// refused, while another container is served; freed slots are reusable.
func TestFaultsConnectionCapPerContainer(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	t.Setenv("CLAWD_PEEK_TIMEOUT", fltPeek) // many clients connect at once
	cl := StartClawd(t, ctd, ClawdOpts{Policy: faultPolicy, Extra: "max-conns-per-container: 50\n"})
	files := map[string]string{loadgenBin(t): "/loadgen"}
	hog := ctd.Run(t, "hog", harness.RunOpts{Files: files})
	other := ctd.Run(t, "other", harness.RunOpts{Files: files})
	cl.MustCLI("attach", hog.Name)
	cl.MustCLI("attach", other.Name)
	up.Reset()
	hostPort := fmt.Sprintf("%s:%d", harness.UpstreamIPv4, harness.UpstreamHTTPPort)
	slow := ldAsync(t, hog, 2*time.Minute, "-mode", "slowloris", "-n", "120", "-addr", hostPort,
		"-line", "GET /allow/hog HTTP/1.1\r\nHost: "+hostPort+"\r\n", "-every", "1s", "-for", "20s")
	eventually(t, "clawd logging the connection limit for the hog", func() bool {
		for _, l := range cl.LogLines() {
			if l["msg"] == "connection limit reached: refusing new connections" && l["container"] == hog.Name {
				return true
			}
		}
		return false
	})
	// The hog's next request is refused; the other container is served.
	r, err := ldRun(t, hog, time.Minute, "-n", "1", "-timeout", "10s", "-url", upURL("/allow/hog-extra"))
	if err != nil || r[0].Err == "" {
		t.Errorf("request over the hog's connection budget: %+v %v", r, err)
	}
	fltGet(t, other, 20, upURL("/allow/other{i}"))
	if n := fltSeen(up, "/allow/other"); n != 20 {
		t.Errorf("upstream saw %d of the other container's 20 requests", n)
	}
	sl := ldWait(t, slow, "hog slowloris")
	open := 0
	for _, r := range sl {
		if !r.Closed && r.Err == "" {
			open++ // held until the client gave up
		}
	}
	if open != 50 {
		t.Errorf("%d of the hog's connections stayed open, want the limit 50", open)
	}
	// Its slots are free again.
	eventually(t, "the hog served again", func() bool {
		r, err := ldRun(t, hog, time.Minute, "-n", "1", "-timeout", "10s", "-url", upURL("/allow/hog-again"))
		return err == nil && r[0].Status == 200
	})
	if n := fltSeen(up, "/allow/hog-extra"); n != 0 {
		t.Errorf("the refused request reached the upstream %d times", n)
	}
}
