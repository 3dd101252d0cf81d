package api

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
)

func TestClient(t *testing.T) {
	e := newEnv(t, "tok-test")
	srv := httptest.NewServer(Public(e.M, Options{Token: e.token}))
	defer srv.Close()
	c := &Client{HTTP: srv.Client(), Base: srv.URL, Token: "tok-test"}
	ctx := context.Background()

	if _, err := (&Client{HTTP: srv.Client(), Base: srv.URL}).List(ctx, ""); !IsStatus(err, 401) {
		t.Fatalf("no token: %v", err)
	}
	ctxW, cancelW := context.WithCancel(ctx)
	seen := make(chan []approval.Approval, 10)
	watchDone := make(chan error, 1)
	go func() { watchDone <- c.Watch(ctxW, func(as []approval.Approval) { seen <- as }) }()
	if first := <-seen; len(first) != 0 {
		t.Fatalf("first watch call: %v", first)
	}

	ch1 := approvaltest.Async(e.M, ctx, approvaltest.Hold("agent1", "PUT", "/repos/o/r/pulls/1/merge"))
	ch2 := approvaltest.Async(e.M, ctx, approvaltest.Hold("agent2", "DELETE", "/repos/o/r"))
	approvaltest.WaitPending(t, e.M, 2)
	for as := range seen {
		if len(as) == 2 {
			break
		}
	}
	cancelW()
	if err := <-watchDone; err != nil {
		t.Fatalf("watch: %v", err)
	}

	list, err := c.List(ctx, "agent2")
	if err != nil || len(list) != 1 || list[0].Method != "DELETE" {
		t.Fatalf("List: %+v %v", list, err)
	}
	id2 := list[0].ID
	all, _ := c.List(ctx, "")
	id1 := all[0].ID
	if id1 == id2 {
		id1 = all[1].ID
	}
	if a, err := c.Get(ctx, id1); err != nil || a.Status != approval.Pending {
		t.Fatalf("Get: %+v %v", a, err)
	}
	if a, err := c.Approve(ctx, id1, 15*time.Minute); err != nil || a.Status != approval.Approved || a.By != "api" || a.GrantID == "" {
		t.Fatalf("Approve: %+v %v", a, err)
	}
	if a, err := c.Deny(ctx, id2, "dangerous"); err != nil || a.Reason != "dangerous" {
		t.Fatalf("Deny: %+v %v", a, err)
	}
	if _, err := c.Deny(ctx, id1, ""); !IsStatus(err, 409) {
		t.Fatalf("contrary decision: %v", err)
	}
	if _, err := c.Get(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa"); !IsStatus(err, 404) {
		t.Fatalf("unknown: %v", err)
	}
	approvaltest.Recv(t, ch1)
	approvaltest.Recv(t, ch2)
	gs, err := c.Grants(ctx)
	if err != nil || len(gs) != 1 {
		t.Fatalf("Grants: %+v %v", gs, err)
	}
	if err := c.RevokeGrant(ctx, gs[0].ID); err != nil {
		t.Fatal(err)
	}
	if gs, _ := c.Grants(ctx); len(gs) != 0 {
		t.Fatalf("after revoke: %+v", gs)
	}
}

func TestFormatTable(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	FormatTable(&b, []approval.Approval{{
		ID: "abc", Created: now.Add(-90 * time.Second), Container: approvaltest.Container("agent1"), Method: "PUT",
		URL: "https://api.github.com/x\x1b[2J", Summary: "Merge pull request #7 in acme/api",
	}}, now)
	out := b.String()
	for _, want := range []string{"ID", "AGE", "CONTAINER", "abc", "1m30s", "agent1", "PUT", "https://api.github.com/x?[2J", "Merge pull request #7"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("escape sequence reached the terminal")
	}
	b.Reset()
	FormatGrants(&b, []approval.Grant{{ID: "g1", Expires: now.Add(15 * time.Minute), Container: "agent1", Rule: "gh", Method: "PUT", Host: "api.github.com", Path: "/x", By: "cli"}}, now)
	if !strings.Contains(b.String(), "15m00s") || !strings.Contains(b.String(), "api.github.com") {
		t.Errorf("grants table:\n%s", b.String())
	}
}
