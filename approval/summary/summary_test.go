package summary

import (
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
)

func TestSummaries(t *testing.T) {
	tests := []struct {
		name, method, host, path, body, want string
	}{
		{"merge PR", "PUT", "api.github.com", "/repos/acme/api/pulls/12/merge", "", "Merge pull request #12 in acme/api"},
		{"delete repo", "DELETE", "api.github.com", "/repos/acme/api", "", "Delete repository acme/api"},
		{"delete branch", "DELETE", "api.github.com", "/repos/acme/api/git/refs/heads/feature/x", "", "Delete branch feature/x in acme/api"},
		{"delete tag", "DELETE", "api.github.com", "/repos/acme/api/git/refs/tags/v1", "", "Delete tag v1 in acme/api"},
		{"create ref", "POST", "api.github.com", "/repos/acme/api/git/refs", `{"ref":"refs/heads/main2","sha":"abc"}`, "Create ref refs/heads/main2 in acme/api"},
		{"force update", "PATCH", "api.github.com", "/repos/acme/api/git/refs/heads/main", `{"sha":"0123456789abcdef0123","force":true}`, "Force-update heads/main in acme/api to 0123456789ab"},
		{"update ref", "PATCH", "api.github.com", "/repos/acme/api/git/refs/heads/main", `{"sha":"abc"}`, "Update heads/main in acme/api to abc"},
		{"release", "POST", "api.github.com", "/repos/acme/api/releases", `{"tag_name":"v2.0.0"}`, "Create release v2.0.0 in acme/api"},
		{"make public", "PATCH", "api.github.com", "/repos/acme/api", `{"private":false}`, "Make repository acme/api public"},
		{"enterprise", "PUT", "ghe.corp", "/api/v3/repos/a/b/pulls/1/merge", "", "Merge pull request #1 in a/b"},
		{"git push", "POST", "github.com", "/acme/api.git/git-receive-pack", "", "Push to acme/api on github.com"},
		{"payout", "POST", "api.stripe.com", "/v1/payouts", "amount=1234&currency=eur&destination=ba_123", "Pay out 12.34 EUR to ba_123"},
		{"stripe host in any form", "POST", "API.Stripe.com.:443", "/v1/payouts", "amount=5&currency=usd", "Pay out 0.05 USD to the default bank account"},
		{"git push host with port", "POST", "GitHub.com:443", "/acme/api.git/git-receive-pack", "", "Push to acme/api on github.com"},
		{"payout default", "POST", "api.stripe.com", "/v1/payouts", "amount=5&currency=usd", "Pay out 0.05 USD to the default bank account"},
		{"zero decimal", "POST", "api.stripe.com", "/v1/transfers", "amount=500&currency=jpy&destination=acct_1", "Transfer 500 JPY to acct_1"},
		{"charge", "POST", "api.stripe.com", "/v1/charges", "amount=2000&currency=usd&customer=cus_9", "Charge 20.00 USD to customer cus_9"},
		{"payment intent", "POST", "api.stripe.com", "/v1/payment_intents", "amount=999&currency=gbp&confirm=true", "Create a payment of 9.99 GBP (confirmed now)"},
		{"refund", "POST", "api.stripe.com", "/v1/refunds", "charge=ch_1&amount=100&currency=usd", "Refund 1.00 USD of ch_1"},
		{"stripe read falls back", "GET", "api.stripe.com", "/v1/payouts", "", "GET https://api.stripe.com/v1/payouts"},
		{"generic", "POST", "example.com", "/things?token=sk_live_abcdefgh12345678", "", "POST https://example.com/things?token=[redacted]"},
	}
	e := approvaltest.New(t, func(c *approval.Config) { c.Summarizers = Default() })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &approval.Hold{Method: tt.method, Host: tt.host, Path: tt.path, URL: "https://" + tt.host + tt.path, Body: []byte(tt.body)}
			if got := e.M.Summary(h); got != tt.want {
				t.Fatalf("summary = %q, want %q", got, tt.want)
			}
		})
	}
}
