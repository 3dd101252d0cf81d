package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
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
      ports: [8080, 8090]
      paths: ["/allow/**"]
      action: allow
    - name: flt-approve
      cidrs: [198.51.100.10/32]
      ports: [8080, 8090]
      paths: ["/approve/**"]
      action: approve
`

// fltSink starts an HTTP server in the upstream netns on :8090 that reads
// the whole request body and answers its length and SHA-256.
func fltSink(t *testing.T, up *harness.Upstream) string {
	t.Helper()
	ln, err := up.Listen("tcp", fmt.Sprintf("%s:8090", harness.UpstreamIPv4))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "n": n, "sha256": hex.EncodeToString(h.Sum(nil)), "err": fmt.Sprint(err)})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return fmt.Sprintf("http://%s:8090", harness.UpstreamIPv4)
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
	sink := fltSink(t, up)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: faultPolicy, Extra: "approval:\n  max-pending-per-container: 20\n"})
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
	// 32 MiB body for an approve rule: over the hold buffer, refused.
	bigHold := ldAsync(t, abuser, 3*time.Minute, "-n", "1", "-timeout", "120s", "-X", "POST", "-body-size", strconv.Itoa(32<<20), "-url", sink+"/approve/big")
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
		if !strings.Contains(st, "pending") {
			t.Fatalf("clawd status during the abuse:\n%s", st)
		}
		time.Sleep(time.Second)
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
	if r := ldWait(t, bigHold, "32 MiB body to approve")[0]; r.Status != 413 || r.Error != "body_too_large" {
		t.Errorf("32 MiB body to an approve rule: %+v, want 413 body_too_large", r)
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
	if n := fltSeen(up, "/approve/"); n != 0 {
		t.Errorf("upstream saw %d held requests that were never approved", n)
	}

	// Every slowloris connection was cut by clawd's header read timeout,
	// well before the client's own bound, and none reached the upstream.
	sl := ldWait(t, slow, "slowloris")
	closed := 0
	for _, r := range sl {
		if r.Closed {
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
