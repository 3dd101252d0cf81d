package suggest

import (
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

// Attack tests for issue 16 (`clawd policy suggest`): the audit log is
// written by clawd, but an agent in audit mode chooses its hosts, SNI,
// paths and methods. Each test asserts the secure behaviour.

// proposeOK runs the collector on log and fails the test when the whole
// proposal is refused: one hostile line must not take the tool down for
// every container (it is skipped and counted instead).
func proposeOK(t *testing.T, o Options, log string) (Result, *policy.Policy) {
	t.Helper()
	c := New(o)
	if err := c.Read(strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	res, err := c.Propose()
	if err != nil {
		t.Fatalf("one agent-chosen audit line makes suggest fail for everyone: %v", err)
	}
	if res.YAML == nil {
		t.Fatal("nothing proposed")
	}
	p, err := policy.Parse(res.YAML, "suggested.yaml")
	if err != nil {
		t.Fatalf("invalid proposal: %v\n%s", err, res.YAML)
	}
	return res, p
}

// A host name whose label starts or ends with '-' passes hostname.Valid
// (the check suggest uses) but not the policy parser's hostname.Pattern:
// the proposal then fails to validate and suggest prints nothing at all.
// An agent can get such a name into the audit log (its own DNS zone
// answers "-x.attacker.example"; audit-mode DNS answers every name).
func TestAttack16Suggest_HyphenLabelHostKillsProposal(t *testing.T) {
	for _, h := range []string{"-a.example.com", "a-.example.com", "x.-b.example.com"} {
		t.Run(h, func(t *testing.T) {
			log := line(t, req("GET", "good.example.com", "/v1/x", "https", "203.0.113.10:443")) +
				line(t, req("GET", h, "/", "https", "203.0.113.11:443"))
			_, p := proposeOK(t, Options{}, log)
			checkProbes(t, p, []probe{{"agent-1", "GET", "good.example.com", "/v1/y", "203.0.113.10:443", policy.Allow}})
		})
	}
}

// Rule names are derived from the target with ':' replaced by '-': an
// IPv6 address and a host name spelling the same thing collide, the
// parser refuses duplicate rule names, and the whole proposal fails.
func TestAttack16Suggest_RuleNameCollisionKillsProposal(t *testing.T) {
	log := line(t, audit.Entry{Proto: "tls", SNI: "2001-db8-ffff--1", Host: "2001-db8-ffff--1", Dst: "203.0.113.12:443", Action: "allow", Mode: "audit", Would: "deny", Rule: "default"}) +
		line(t, audit.Entry{Proto: "tcp", Dst: "[2001:db8:ffff::1]:443", Action: "allow", Mode: "audit", Would: "deny", Rule: "default"}) +
		line(t, req("GET", "good.example.com", "/v1/x", "https", "203.0.113.10:443"))
	_, p := proposeOK(t, Options{}, log)
	checkProbes(t, p, []probe{{"agent-1", "GET", "good.example.com", "/v1/y", "203.0.113.10:443", policy.Allow}})
}

// A read of the literal path "/**" (or "/*", "/%2e", any non-plain first
// segment) turns the proposed read rule host-wide: one crafted request
// makes suggest grant every path on the host, far more than was seen.
// Secure: a non-plain segment is skipped (or proposed as exactly what was
// seen), never widened to the whole host.
func TestAttack16Suggest_StarPathWidensToHost(t *testing.T) {
	for _, path := range []string{"/**", "/*", "/%2e%2e/admin", "/a b"} {
		t.Run(path, func(t *testing.T) {
			log := line(t, req("GET", "api.example.com", "/v1/models", "https", "203.0.113.10:443")) +
				line(t, req("GET", "api.example.com", path, "https", "203.0.113.10:443"))
			_, p := proposeOK(t, Options{}, log)
			checkProbes(t, p, []probe{
				{"agent-1", "GET", "api.example.com", "/v1/models", "203.0.113.10:443", policy.Allow},
				{"agent-1", "GET", "api.example.com", "/admin/secrets", "203.0.113.10:443", policy.Deny},
			})
		})
	}
}

// --diff says "copy these rules into the set of the same name, above its
// rules (first match wins)". A proposed read rule generalised to "/v1/**"
// from a seen "/v1/models/a" then shadows the author's explicit deny for
// "/v1/admin/**", a path the agent was never seen reading. Merged as told,
// the suggestion grants more than was seen and overrides a deny.
func TestAttack16Suggest_DiffShadowsExplicitDeny(t *testing.T) {
	const curSrc = `
sets:
  - name: agents
    match: {name: "agent-*"}
    mode: audit
    rules:
      - name: no-admin
        hosts: api.example.com
        intercept: true
        paths: ["/v1/admin/**"]
        action: deny
        reason: "the admin API is off limits"
`
	cur, err := policy.Parse([]byte(curSrc), "current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	log := line(t, req("GET", "api.example.com", "/v1/models/a", "https", "203.0.113.10:443"))
	res, _ := proposeOK(t, Options{Current: cur}, log)
	merged := mergeAfter(t, curSrc, res.YAML)
	checkProbes(t, merged, []probe{
		{"agent-1", "GET", "api.example.com", "/v1/models/a", "203.0.113.10:443", policy.Allow},
		{"agent-1", "GET", "api.example.com", "/v1/admin/users", "203.0.113.10:443", policy.Deny},
	})
}

// A request the author's own deny rule (not the default) refused, in
// audit mode "would deny" by rule no-paste, is proposed as allow; with
// --diff, above that very rule. Secure: what an explicit deny rule
// decided is never proposed (as lines a human denied are not).
func TestAttack16Suggest_ExplicitDenyRuleProposedAsAllow(t *testing.T) {
	const curSrc = `
sets:
  - name: agents
    match: {name: "agent-*"}
    mode: audit
    rules:
      - name: no-paste
        hosts: paste.example.com
        action: deny
`
	cur, err := policy.Parse([]byte(curSrc), "current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	log := line(t, audit.Entry{Proto: "https", Method: "GET", Host: "paste.example.com", Path: "/x", Dst: "203.0.113.11:443", Action: "allow", Mode: "audit", Would: "deny", Rule: "no-paste"}) +
		line(t, req("GET", "good.example.com", "/v1/x", "https", "203.0.113.10:443"))
	for _, o := range []Options{{}, {Current: cur}} {
		res, _ := proposeOK(t, o, log)
		if strings.Contains(string(res.YAML), `hosts: "paste.example.com"`) {
			t.Errorf("diff=%v: proposes allowing what the author's deny rule no-paste refused:\n%s", o.Current != nil, res.YAML)
		}
	}
}

// The same for an enforce-mode deny by an explicit rule: action deny.
func TestAttack16Suggest_EnforceDenyProposed(t *testing.T) {
	log := line(t, audit.Entry{Proto: "https", Method: "GET", Host: "paste.example.com", Path: "/x", Dst: "203.0.113.11:443", Action: "deny", Rule: "no-paste", Reason: "no paste sites"}) +
		line(t, req("GET", "good.example.com", "/v1/x", "https", "203.0.113.10:443"))
	res, _ := proposeOK(t, Options{}, log)
	if strings.Contains(string(res.YAML), `hosts: "paste.example.com"`) {
		t.Errorf("proposes allowing what an enforcing deny rule refused:\n%s", res.YAML)
	}
}

// Held: YAML specials, newlines, unicode, globs in hosts, methods and
// container names never reach the output as syntax; the output parses and
// grants nothing to a name it did not see.
func TestAttack16Suggest_InjectionHeld(t *testing.T) {
	var b strings.Builder
	for _, h := range []string{
		"*.example.com", "**", "*", "evil.example.com\n      action: allow", "évil.example.com", "xn--vil-bma.example.com\u200b",
		"a.example.com\"", "a.example.com'", "&anchor", "!!binary", "a.example.com #c", "[::1]", "::ffff:169.254.169.254",
		"169.254.169.254", "0251.0376.0251.0376", "2852039166", "0x7f000001", "localhost.", "[64:ff9b::a9fe:a9fe]",
	} {
		b.WriteString(line(t, req("GET", h, "/", "https", "203.0.113.40:443")))
	}
	for _, m := range []string{"GET\nX", "G*T", "get ", "ÄET", strings.Repeat("A", 40)} {
		b.WriteString(line(t, req(m, "m.example.com", "/", "https", "203.0.113.41:443")))
	}
	for _, c := range []string{"agent-*", "agent-[12]", "a\nb", "a b", strings.Repeat("c", 200)} {
		b.WriteString(line(t, audit.Entry{Container: c, Proto: "https", Method: "GET", Host: "c.example.com", Path: "/", Dst: "203.0.113.42:443", Action: "allow"}))
	}
	b.WriteString(`{"event":"decision","time":"2026-12-01T12:00:00Z","container":"","dst":"203.0.113.42:443","proto":"tcp"}` + "\n")
	// Address literals of special destinations, in every spelling.
	for _, d := range []string{"[::ffff:169.254.169.254]:80", "[64:ff9b::a9fe:a9fe]:80", "[2002:a9fe:a9fe::1]:80", "[::169.254.169.254]:80", "[::1]:80", "[fe80::1%eth0]:80", "0.0.0.0:80", "[::]:80", "127.0.0.1:80", "10.1.2.3:80", "100.64.0.1:80", "[fc00::1]:80"} {
		b.WriteString(line(t, audit.Entry{Proto: "tcp", Dst: d, Action: "allow", Mode: "audit", Would: "deny", Rule: "default"}))
	}
	b.WriteString(line(t, req("GET", "ok.example.com", "/v1/x", "https", "203.0.113.43:443")))
	res, p := proposeOK(t, Options{}, b.String())
	y := string(res.YAML)
	for _, bad := range []string{"evil", `"*`, "169.254", "a9fe", "127.", "::1", "10.1.2.3", "100.64", "fc00", "2002", "0.0.0.0", "\"::\"", "agent-[", "c.example.com", "m.example.com", "&", "!!binary"} {
		if strings.Contains(stripComments(y), bad) {
			t.Errorf("proposal contains %q:\n%s", bad, y)
		}
	}
	checkProbes(t, p, []probe{
		{"agent-1", "GET", "ok.example.com", "/v1/y", "203.0.113.43:443", policy.Allow},
		{"agent-1", "GET", "anything.example.com", "/", "203.0.113.40:443", policy.Deny},
		{"agent-x", "GET", "c.example.com", "/", "203.0.113.42:443", policy.Deny},
		{"agent-1", "", "", "", "169.254.169.254:80", policy.Deny},
	})
}

// Held: a name seen once at a special address is never proposed, even
// when it was seen at a public address many times before and after (a
// name that later resolves to a private address), and in --diff mode.
func TestAttack16Suggest_RebindNameNeverProposed(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 100; i++ {
		b.WriteString(line(t, req("GET", "rebind.example.com", "/v1/x", "https", "203.0.113.50:443")))
	}
	b.WriteString(line(t, audit.Entry{Proto: "tls", SNI: "REBIND.example.com.", Dst: "[::ffff:169.254.169.254]:443", Action: "allow", Mode: "audit", Would: "deny", Rule: "default"}))
	b.WriteString(line(t, req("GET", "ok.example.com", "/", "https", "203.0.113.43:443")))
	cur, _ := policy.Parse([]byte("default: {mode: audit}\n"), "cur.yaml")
	for _, o := range []Options{{}, {Current: cur}} {
		res, _ := proposeOK(t, o, b.String())
		if strings.Contains(stripComments(string(res.YAML)), "rebind") {
			t.Errorf("rebinding name proposed:\n%s", res.YAML)
		}
	}
}

// Held: --since skips lines with no time and lines before it; --container
// keeps one container only (an agent cannot put its lines under another
// container's name: Container is clawd's field).
func TestAttack16Suggest_SinceContainerEdges(t *testing.T) {
	log := `{"event":"decision","container":"agent-1","dst":"203.0.113.60:443","proto":"https","method":"GET","host":"notime.example.com","path":"/"}` + "\n" +
		`{"event":"decision","time":"not a time","container":"agent-1","dst":"203.0.113.60:443","proto":"https","method":"GET","host":"badtime.example.com","path":"/"}` + "\n" +
		line(t, req("GET", "ok.example.com", "/", "https", "203.0.113.43:443")) +
		line(t, audit.Entry{Container: "agent-2", Proto: "https", Method: "GET", Host: "two.example.com", Path: "/", Dst: "203.0.113.61:443", Action: "allow"})
	res, _ := proposeOK(t, Options{Since: t0.Add(-1), Container: "agent-1"}, log)
	for _, bad := range []string{"notime", "badtime", "two.example.com"} {
		if strings.Contains(string(res.YAML), bad) {
			t.Errorf("proposal has %s:\n%s", bad, res.YAML)
		}
	}
}

func stripComments(y string) string {
	var out []string
	for _, l := range strings.Split(y, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// mergeAfter does what the --diff header tells the operator: the proposed
// rules of each set are appended to the current set of the same name,
// after its rules. (The attack first spliced them above, as the header
// then said; the fix changes what the header says, since rules above the
// author's would shadow explicit denies and approvals. curSrc's set is
// its last, with rules last.)
func mergeAfter(t *testing.T, curSrc string, proposal []byte) *policy.Policy {
	t.Helper()
	if !strings.Contains(string(proposal), "AFTER its rules") {
		t.Errorf("the --diff header does not say to append after the current rules:\n%s", proposal)
	}
	t.Helper()
	prop, err := policy.Parse(proposal, "proposal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_ = prop
	// Take the proposal's rule lines (under "rules:" of set "agents") and
	// append them after the current set's rules.
	y := string(proposal)
	i := strings.Index(y, "    rules:\n")
	if i < 0 {
		t.Fatalf("no rules in proposal:\n%s", y)
	}
	rules := y[i+len("    rules:\n"):]
	if j := strings.Index(rules, "\ndefault:"); j >= 0 {
		rules = rules[:j+1]
	}
	merged := strings.TrimRight(curSrc, "\n") + "\n" + rules
	p, err := policy.Parse([]byte(merged), "merged.yaml")
	if err != nil {
		t.Fatalf("merged policy invalid: %v\n%s", err, merged)
	}
	return p
}

// --diff: a read the author holds for approval (an approve rule on
// /v1/secrets/**) is proposed as an allow rule for /v1/** "above its
// rules": merged as told, the human approval is gone.
func TestAttack16Suggest_DiffShadowsApproveForReads(t *testing.T) {
	const curSrc = `
sets:
  - name: agents
    match: {name: "agent-*"}
    mode: audit
    rules:
      - name: secrets-held
        hosts: api.example.com
        intercept: true
        methods: GET
        paths: ["/v1/secrets/**"]
        action: approve
`
	cur, err := policy.Parse([]byte(curSrc), "current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// (A read of another host too, so that there is a proposal at all: the
	// held read itself is no longer proposed.)
	log := line(t, audit.Entry{Proto: "https", Method: "GET", Host: "api.example.com", Path: "/v1/secrets/db", Dst: "203.0.113.10:443", Action: "allow", Mode: "audit", Would: "approve", Rule: "secrets-held"}) +
		line(t, req("GET", "good.example.com", "/v1/x", "https", "203.0.113.11:443"))
	for _, o := range []Options{{}, {Current: cur}} {
		res, _ := proposeOK(t, o, log)
		if strings.Contains(string(res.YAML), `hosts: "api.example.com"`) {
			t.Errorf("diff=%v: proposes allowing a read the author holds for approval:\n%s", o.Current != nil, res.YAML)
		}
	}
	res, _ := proposeOK(t, Options{Current: cur}, log)
	merged := mergeAfter(t, curSrc, res.YAML)
	checkProbes(t, merged, []probe{
		{"agent-1", "GET", "api.example.com", "/v1/secrets/db", "203.0.113.10:443", policy.Approve},
	})
}

// One container's agent fills the collector's 50000 observation slots
// with distinct junk; every other container's observations read after it
// are dropped, so suggest silently proposes nothing for them.
func TestAttack16Suggest_OneAgentCrowdsOutOthers(t *testing.T) {
	var b strings.Builder
	for i := 0; i < maxKeys; i++ {
		b.WriteString(line(t, req("GET", "junk.example.com", "/s"+strings.Repeat("x", i%7)+itoa(i), "https", "203.0.113.10:443")))
	}
	b.WriteString(line(t, audit.Entry{Container: "agent-2", Proto: "https", Method: "GET", Host: "two.example.com", Path: "/v1/x", Dst: "203.0.113.61:443", Action: "allow"}))
	_, p := proposeOK(t, Options{}, b.String())
	checkProbes(t, p, []probe{{"agent-2", "GET", "two.example.com", "/v1/x", "203.0.113.61:443", policy.Allow}})
}

// Set names fall back to "suggested-N" for long container names; a
// containers named "1" and "3" (the long one becomes "suggested-3") then collide and the whole proposal
// fails to validate.
func TestAttack16Suggest_SetNameCollisionKillsProposal(t *testing.T) {
	log := line(t, audit.Entry{Container: strings.Repeat("a", 120), Proto: "tcp", Dst: "203.0.113.70:22", Action: "allow"}) +
		line(t, audit.Entry{Container: "1", Proto: "tcp", Dst: "203.0.113.71:22", Action: "allow"}) +
		line(t, audit.Entry{Container: "3", Proto: "tcp", Dst: "203.0.113.72:22", Action: "allow"})
	proposeOK(t, Options{}, log)
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var d []byte
	for ; i > 0; i /= 10 {
		d = append([]byte{byte('0' + i%10)}, d...)
	}
	return string(d)
}

// Robustness: a line whose dst carries an IPv6 zone (a damaged or
// hand-edited log; clawd's own OrigDst has none) is not skipped as bad:
// it becomes a cidrs rule the parser refuses, and nothing is proposed.
func TestAttack16Suggest_ZonedDstKillsProposal(t *testing.T) {
	log := line(t, audit.Entry{Proto: "tcp", Dst: "[2001:db8:ffff::1%eth0]:22", Action: "allow"}) +
		line(t, req("GET", "good.example.com", "/v1/x", "https", "203.0.113.10:443"))
	proposeOK(t, Options{}, log)
}
