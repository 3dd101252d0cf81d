package approval

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

type targetRec struct {
	mu      sync.Mutex
	posts   []string // targets posted to
	updates []string
}

func (n *targetRec) Name() string { return "tg" }
func (n *targetRec) Post(_ context.Context, c *Card) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.posts = append(n.posts, c.Target)
	return "ref", nil
}
func (n *targetRec) Update(_ context.Context, c *Card, _ string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.updates = append(n.updates, c.Target)
	return nil
}

// Escalation to another place on a channel the route already asks
// (escalate: [{channel: telegram, target: oncall-chat, people: [U2]}]):
// mergeAudiences adds the people to the existing audience and drops the
// target, and no card is posted there. The escalation group never sees
// the request.
func TestAttackEscalationTargetDropped(t *testing.T) {
	n := &targetRec{}
	e := newEnv(t, func(c *Config) { c.Channels = []Channel{n} })
	h := hold("a", "POST", "/x")
	h.Timeout = time.Hour
	h.Route = &policy.Route{Required: 1,
		Approvers:     []policy.Audience{{Channel: "tg", People: []string{"1"}, Target: "team-chat"}},
		EscalateAfter: 10 * time.Minute,
		Escalate:      []policy.Audience{{Channel: "tg", People: []string{"2"}, Target: "oncall-chat"}}}
	_ = async(e.m, context.Background(), h)
	waitPending(t, e.m, 1)
	eventually(t, "first card", func() bool { n.mu.Lock(); defer n.mu.Unlock(); return len(n.posts) == 1 })
	e.clock.Add(11 * time.Minute)
	time.Sleep(300 * time.Millisecond)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range append(append([]string{}, n.posts...), n.updates...) {
		if p == "oncall-chat" {
			return
		}
	}
	t.Errorf("escalation to target oncall-chat on an already asked channel: no card ever went there (posts %q, updates %q)", n.posts, n.updates)
}
