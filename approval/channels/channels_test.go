package channels

import (
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
)

func env(string) (approval.Env, error) { return approval.Env{StateDir: "/nonexistent"}, nil }

func TestBuildRefusesBadEntries(t *testing.T) {
	for _, tc := range []struct {
		spec map[string]any
		want string
	}{
		{map[string]any{"type": "carrier-pigeon"}, `type "carrier-pigeon" is not a channel type`},
		{map[string]any{"type": "webhook", "name": "cli", "url": "https://x.example", "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="}, "reserved"},
		{map[string]any{"type": "webhook", "name": "bad name"}, "use letters"},
		{map[string]any{"type": "webhook", "approvers": "alice"}, "approvers must be a list"},
		{map[string]any{"type": "webhook", "url": "https://x.example", "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZg==", "colour": "red"}, "colour"},
		{map[string]any{"type": "webhook", "url": "https://x.example", "secret": "env:CLAWD_TEST_UNSET_VAR"}, "CLAWD_TEST_UNSET_VAR is not set"},
	} {
		_, err := Build([]map[string]any{tc.spec}, env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.spec, err, tc.want)
		}
	}
	two := []map[string]any{
		{"type": "webhook", "url": "https://x.example", "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="},
		{"type": "webhook", "url": "https://y.example", "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="},
	}
	if _, err := Build(two, env); err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Errorf("two channels named webhook: %v", err)
	}
	two[1]["name"] = "tickets"
	b, err := Build(two, env)
	if err != nil || len(b.Channels) != 2 || b.Channels[1].Name() != "tickets" {
		t.Fatalf("two webhooks: %v", err)
	}
}

func TestDirectory(t *testing.T) {
	dir := Directory([]map[string]any{
		{"type": "slack", "approvers": []any{"U1"}},
		{"type": "ntfy", "name": "phones", "topics": map[string]any{"alice": "t1"}},
	})
	if !dir["cli"].Open || dir["slack"].People[0] != "U1" || dir["phones"].People[0] != "alice" {
		t.Fatalf("%+v", dir)
	}
}
