package summary

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/clawd-dev/clawd/approval"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// Stripe summarises money-moving Stripe API calls (form-encoded bodies).
type Stripe struct{}

// zeroDecimal currencies have no minor unit: amount=500 JPY is 500 yen.
var zeroDecimal = map[string]bool{
	"bif": true, "clp": true, "djf": true, "gnf": true, "jpy": true, "kmf": true, "krw": true, "mga": true,
	"pyg": true, "rwf": true, "ugx": true, "vnd": true, "vuv": true, "xaf": true, "xof": true, "xpf": true,
}

func stripeAmount(f url.Values) string {
	cur := strings.ToLower(f.Get("currency"))
	amt := f.Get("amount")
	if amt == "" {
		return "the full amount"
	}
	n, err := strconv.ParseInt(amt, 10, 64)
	if err != nil || n < 0 {
		return amt + " " + strings.ToUpper(cur)
	}
	if cur == "" {
		return fmt.Sprintf("%d (minor units)", n)
	}
	if zeroDecimal[cur] {
		return fmt.Sprintf("%d %s", n, strings.ToUpper(cur))
	}
	return fmt.Sprintf("%d.%02d %s", n/100, n%100, strings.ToUpper(cur))
}

func (Stripe) Summarize(h *approval.Hold) (string, bool) {
	if hostname.Normalize(h.Host) != "api.stripe.com" || strings.ToUpper(h.Method) != "POST" {
		return "", false
	}
	p := splitPath(h.Path)
	if len(p) < 2 || p[0] != "v1" {
		return "", false
	}
	f, _ := url.ParseQuery(string(h.Body))
	amount := stripeAmount(f)
	to := func(keys ...string) string {
		for _, k := range keys {
			if v := f.Get(k); v != "" {
				return " to " + v
			}
		}
		return ""
	}
	switch {
	case p[1] == "payouts" && len(p) == 2:
		dst := to("destination")
		if dst == "" {
			dst = " to the default bank account"
		}
		return "Pay out " + amount + dst, true
	case p[1] == "transfers" && len(p) == 2:
		return "Transfer " + amount + to("destination"), true
	case p[1] == "charges" && len(p) == 2:
		s := "Charge " + amount
		if c := f.Get("customer"); c != "" {
			s += " to customer " + c
		}
		return s, true
	case p[1] == "payment_intents" && len(p) == 2:
		s := "Create a payment of " + amount
		if c := f.Get("customer"); c != "" {
			s += " from customer " + c
		}
		if f.Get("confirm") == "true" {
			s += " (confirmed now)"
		}
		return s, true
	case p[1] == "payment_intents" && len(p) == 4 && p[3] == "confirm":
		return "Confirm payment " + p[2], true
	case p[1] == "refunds" && len(p) == 2:
		of := f.Get("charge")
		if of == "" {
			of = f.Get("payment_intent")
		}
		return "Refund " + amount + " of " + of, true
	}
	return "", false
}
