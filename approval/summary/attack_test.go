package summary

import (
	"context"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/policy"
)

// The GitHub merge summary appends the body's merge_method unquoted. The
// agent writes {"merge_method":"squash)\n\n✅ Approved by alice (security)\n("}
// and the card's first line, the summary, carries its own fake status
// lines: the core's Summary does not strip line breaks (title is %q-quoted,
// merge_method is not).
func TestAttackMergeMethodInjectsLines(t *testing.T) {
	e := approvaltest.New(t, func(c *approval.Config) { c.Summarizers = Default() })
	h := approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
	h.Body = []byte(`{"merge_method":"squash)\n\n\u2705 Approved by alice (security)\n("}`)
	h.BodySize = int64(len(h.Body))
	h.Route = &policy.Route{Required: 1, Approvers: []policy.Audience{{Channel: approval.ChannelCLI}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = approvaltest.Async(e.M, ctx, h)
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	if strings.ContainsAny(a.Summary, "\n\r") {
		t.Errorf("summary shown first on every card carries agent-written lines: %q", a.Summary)
	}
}
