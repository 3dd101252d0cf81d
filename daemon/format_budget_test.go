package daemon

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy/usage"
)

func TestFormatListShowsBudgets(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	a := AttachmentInfo{Record: Record{Container: policy.Container{Name: "agent", Runtime: "containerd"}, AttachedAt: now}}
	a.Budgets = []usage.Usage{{Budget: "default/anthropic", Tokens: 2100, TokenLimit: 2000, Requests: 3, Window: "24h", WindowResets: now.Add(5 * time.Hour), Spent: true}}
	var b bytes.Buffer
	if err := FormatList(&b, []AttachmentInfo{a}, now); err != nil {
		t.Fatal(err)
	}
	want := "agent: budget default/anthropic: 2100/2000 tokens, 3 requests in the 24h window (resets in 5h0m0s): SPENT"
	if !strings.Contains(b.String(), want) {
		t.Fatalf("clawd ls:\n%s\nwant a line %q", b.String(), want)
	}
}

// While requests run, their reservations show (red team, issue 16: the
// estimates admitted requests hold are part of what is spent).
func TestFormatListShowsReservations(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	a := AttachmentInfo{Record: Record{Container: policy.Container{Name: "agent", Runtime: "containerd"}, AttachedAt: now}}
	a.Budgets = []usage.Usage{{Budget: "default/anthropic", Tokens: 100, TokenLimit: 2000, Requests: 3, InFlight: 2, Reserved: 1016, Window: "1h", WindowResets: now.Add(time.Hour)}}
	var b bytes.Buffer
	if err := FormatList(&b, []AttachmentInfo{a}, now); err != nil {
		t.Fatal(err)
	}
	want := "agent: budget default/anthropic: 100/2000 tokens, 3 requests in the 1h window (resets in 1h0m0s), 2 in flight reserving 1016 tokens"
	if !strings.Contains(b.String(), want) || strings.Contains(b.String(), "SPENT") {
		t.Fatalf("clawd ls:\n%s\nwant a line %q", b.String(), want)
	}
}
