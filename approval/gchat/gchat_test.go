package gchat_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/gchat"
	"github.com/clawd-dev/clawd/approval/gchat/fake"
	"github.com/clawd-dev/clawd/policy"
)

// decider stands for the core (approvaltest.Decider).
type decider = approvaltest.Decider

type rig struct {
	f   *fake.Server
	ch  *gchat.Channel
	dec *decider
	ts  *httptest.Server
	h   atomic.Pointer[http.Handler]
}

// use answers clicks with d.
func (r *rig) use(d approval.Decider) {
	h := r.ch.Callbacks(d)
	r.h.Store(&h)
}

func newRig(t *testing.T, audType string) *rig {
	t.Helper()
	r := &rig{f: fake.New(), dec: &decider{Res: approval.Result{Outcome: approval.ResultDecided, Message: "Approved. The request goes through."}}}
	t.Cleanup(r.f.Close)
	r.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { (*r.h.Load()).ServeHTTP(w, req) }))
	t.Cleanup(r.ts.Close)
	r.f.SetAudienceType(audType)
	r.f.SetCallbackURL(r.ts.URL + approval.CallbackPath("gchat"))
	ch, err := gchat.New("gchat", r.f.Settings(), approval.Env{PublicURL: r.ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	r.ch = ch
	r.use(r.dec)
	t.Cleanup(func() {
		if v := r.f.Violations(); len(v) > 0 {
			t.Errorf("fake saw violations: %q", v)
		}
	})
	return r
}

const testID = "abcdefghijklmnopqrstuvwxyz"

func testCard(now time.Time) *approval.Card {
	return &approval.Card{
		Approval: &approval.Approval{
			ID: testID, Status: approval.Pending, Method: "PUT",
			URL:       "https://api.github.com/repos/o/r/pulls/1/merge",
			Container: policy.Container{Name: "agent-1"}, Rule: "github-writes",
			Summary: "Merge pull request #1 in o/r <script>", Body: `{"merge_method":"squash","x":"<b>hi</b>"}`,
			Expires: now.Add(10 * time.Minute), Digest: strings.Repeat("0123456789abcdef", 4),
			GrantsAllowed: true, Required: 1,
		},
		Channel: "gchat", People: []string{"users/111", "users/222", "users/all evil"}, Now: now,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPostCardShape(t *testing.T) {
	r := newRig(t, gchat.AudienceProjectNumber)
	card := testCard(time.Now())
	ref, err := r.ch.Post(ctx(t), card)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := r.f.Card(testID)
	if !ok {
		t.Fatal("no card posted")
	}
	if ref != m.Name || !strings.HasPrefix(ref, fake.Space+"/messages/") {
		t.Fatalf("ref %q, message %q", ref, m.Name)
	}
	if m.Title != card.Summary {
		t.Errorf("title %q", m.Title)
	}
	if !strings.Contains(m.Text, "<users/111>") || !strings.Contains(m.Text, "<users/222>") || strings.Contains(m.Text, "all") {
		t.Errorf("text %q: want mentions of the two valid people only", m.Text)
	}
	all := strings.Join(m.Texts, "\n")
	for _, want := range []string{"<b>PUT</b> https://api.github.com/repos/o/r/pulls/1/merge", "agent-1", "github-writes", "&lt;b&gt;hi&lt;/b&gt;", "10m0s (until "} {
		if !strings.Contains(all, want) {
			t.Errorf("card texts lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "<b>hi</b>") {
		t.Error("body HTML reached the card unescaped")
	}
	var labels, values []string
	for _, b := range m.Buttons {
		labels = append(labels, b.Text)
		values = append(values, b.Value)
		if b.Function != gchat.Function {
			t.Errorf("button function %q", b.Function)
		}
	}
	if !slices.Equal(labels, []string{"Approve", "Approve 15 min", "Deny"}) {
		t.Errorf("buttons %q", labels)
	}
	want := []string{}
	for _, b := range card.Buttons() {
		want = append(want, b.Value)
	}
	if !slices.Equal(values, want) {
		t.Errorf("button values %q, want %q", values, want)
	}
}

func TestLimits(t *testing.T) {
	r := newRig(t, gchat.AudienceProjectNumber)
	card := testCard(time.Now())
	card.Summary = strings.Repeat("S", 5000)
	card.URL = "https://x.example/" + strings.Repeat("&", 20000)
	card.Body = strings.Repeat("<&>", 30000)
	for i := 0; i < 2000; i++ {
		card.People = append(card.People, "users/1234567890")
	}
	if _, err := r.ch.Post(ctx(t), card); err != nil {
		t.Fatal(err) // the fake refuses anything over Chat's limits
	}
	m, _ := r.f.Card(testID)
	if n := len([]rune(m.Title)); n > 200 || !strings.HasSuffix(m.Title, "…") {
		t.Errorf("title is %d characters", n)
	}
	if len([]rune(m.Text)) > fake.MaxText {
		t.Errorf("text is %d characters", len([]rune(m.Text)))
	}
	if len(m.Buttons) != 3 {
		t.Errorf("buttons lost: %d", len(m.Buttons))
	}
}

func TestUpdateRemovesButtons(t *testing.T) {
	r := newRig(t, gchat.AudienceProjectNumber)
	card := testCard(time.Now())
	ref, err := r.ch.Post(ctx(t), card)
	if err != nil {
		t.Fatal(err)
	}
	card.Status, card.By, card.Reason = approval.Denied, "gchat:users/111", "not today"
	if err := r.ch.Update(ctx(t), card, ref); err != nil {
		t.Fatal(err)
	}
	m, _ := r.f.Card(testID)
	if m.Updates != 1 || len(m.Buttons) != 0 {
		t.Fatalf("updates %d, buttons %v", m.Updates, m.Buttons)
	}
	all := strings.Join(m.Texts, "\n")
	if !strings.Contains(all, "<b>denied</b> by gchat:users/111: not today") {
		t.Errorf("outcome missing:\n%s", all)
	}
	if !strings.Contains(m.Text, "denied") || strings.Contains(m.Text, "<users/") {
		t.Errorf("text %q", m.Text)
	}
	if err := r.ch.Update(ctx(t), card, "spaces/OTHER/messages/x"); err == nil {
		t.Error("update of a message in another space accepted")
	}
	if r.f.Messages() != 1 {
		t.Errorf("%d messages", r.f.Messages())
	}
}

func TestClick(t *testing.T) {
	for _, aud := range []string{gchat.AudienceProjectNumber, gchat.AudienceEndpointURL} {
		t.Run(aud, func(t *testing.T) {
			r := newRig(t, aud)
			if _, err := r.ch.Post(ctx(t), testCard(time.Now())); err != nil {
				t.Fatal(err)
			}
			reply, err := r.f.Click(ctx(t), testID, approval.ActApproveFor, "users/111")
			if err != nil {
				t.Fatal(err)
			}
			if reply != r.dec.Res.Message {
				t.Errorf("clicker saw %q", reply)
			}
			calls := r.dec.Calls()
			if len(calls) != 1 {
				t.Fatalf("%d decisions", len(calls))
			}
			d := calls[0]
			if d.ID != testID || d.Digest != "0123456789abcdef" || !d.Approve || d.GrantFor != approval.GrantFor ||
				d.Channel != "gchat" || d.User != "users/111" || d.Display != "Fake 111" {
				t.Errorf("decision %+v", d)
			}
			// A different click by another person is its own event.
			if _, err := r.f.Click(ctx(t), testID, approval.ActDeny, "users/222"); err != nil {
				t.Fatal(err)
			}
			if calls := r.dec.Calls(); len(calls) != 2 || calls[1].Approve || calls[1].User != "users/222" {
				t.Errorf("second decision %+v", calls)
			}
		})
	}
}

func TestForgeriesRefused(t *testing.T) {
	common := []fake.Forgery{fake.ForgeWrongKey, fake.ForgeWrongAudience, fake.ForgeWrongIssuer, fake.ForgeExpired,
		fake.ForgeNoToken, fake.ForgeAlgNone, fake.ForgeOtherMode, fake.ForgeStaleEvent}
	cases := map[string][]fake.Forgery{
		gchat.AudienceProjectNumber: common,
		gchat.AudienceEndpointURL:   append(slices.Clone(common), fake.ForgeWrongEmail, fake.ForgeUnverifiedEmail),
	}
	for aud, forgeries := range cases {
		t.Run(aud, func(t *testing.T) {
			r := newRig(t, aud)
			if _, err := r.ch.Post(ctx(t), testCard(time.Now())); err != nil {
				t.Fatal(err)
			}
			for _, f := range forgeries {
				code, err := r.f.Forge(ctx(t), testID, approval.ActApprove, "users/111", f)
				if err != nil {
					t.Fatal(err)
				}
				if code != http.StatusUnauthorized {
					t.Errorf("forgery %d: status %d, want 401", f, code)
				}
			}
			code, err := r.f.Forge(ctx(t), testID, approval.ActApprove, "users/111", fake.ForgeOtherSpace)
			if err != nil || code != http.StatusForbidden {
				t.Errorf("other space: %d %v", code, err)
			}
			if n := len(r.dec.Calls()); n != 0 {
				t.Fatalf("decider called %d times by forgeries", n)
			}
			// The genuine click still works, once.
			if _, err := r.f.Click(ctx(t), testID, approval.ActApprove, "users/111"); err != nil {
				t.Fatal(err)
			}
			code, err = r.f.Replay(ctx(t))
			if err != nil || code != http.StatusUnauthorized {
				t.Errorf("replay: %d %v, want 401", code, err)
			}
			if n := len(r.dec.Calls()); n != 1 {
				t.Errorf("decider called %d times, want 1", n)
			}
		})
	}
}

func TestMalformedRefused(t *testing.T) {
	r := newRig(t, gchat.AudienceProjectNumber)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	msg := fake.Space + "/messages/m1"
	for name, body := range map[string]string{
		"not json":     `{`,
		"no user":      `{"type":"CARD_CLICKED","eventTime":"` + now + `","space":{"name":"` + fake.Space + `"},"message":{"name":"` + msg + `"},"common":{"invokedFunction":"clawd","parameters":{"v":"a:` + testID + `:0123456789abcdef"}}}`,
		"bot user":     `{"type":"CARD_CLICKED","eventTime":"` + now + `","space":{"name":"` + fake.Space + `"},"message":{"name":"` + msg + `"},"user":{"name":"users/1","type":"BOT"},"common":{"invokedFunction":"clawd","parameters":{"v":"a:` + testID + `:0123456789abcdef"}}}`,
		"no time":      `{"type":"CARD_CLICKED","space":{"name":"` + fake.Space + `"},"message":{"name":"` + msg + `"},"user":{"name":"users/1"},"common":{"invokedFunction":"clawd","parameters":{"v":"a:` + testID + `:0123456789abcdef"}}}`,
		"no function":  `{"type":"CARD_CLICKED","eventTime":"` + now + `","space":{"name":"` + fake.Space + `"},"message":{"name":"` + msg + `"},"user":{"name":"users/1"}}`,
		"disagreement": `{"type":"CARD_CLICKED","eventTime":"` + now + `","space":{"name":"` + fake.Space + `"},"message":{"name":"` + msg + `"},"user":{"name":"users/1"},"common":{"invokedFunction":"clawd","parameters":{"v":"a:` + testID + `:0123456789abcdef"}},"action":{"actionMethodName":"clawd","parameters":[{"key":"v","value":"d:` + testID + `:0123456789abcdef"}]}}`,
	} {
		code, err := r.f.PostRaw(ctx(t), []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", name, code)
		}
	}
	// A well-formed click on a value that is no clawd button is answered, not decided.
	code, err := r.f.PostRaw(ctx(t), []byte(`{"type":"CARD_CLICKED","eventTime":"`+now+`","space":{"name":"`+fake.Space+`"},"message":{"name":"`+msg+`"},"user":{"name":"users/1"},"action":{"actionMethodName":"clawd","parameters":[{"key":"v","value":"x:nope"}]}}`))
	if err != nil || code != http.StatusOK {
		t.Errorf("bad value: %d %v", code, err)
	}
	// Other events are acknowledged and ignored.
	code, err = r.f.PostRaw(ctx(t), []byte(`{"type":"ADDED_TO_SPACE","space":{"name":"`+fake.Space+`"}}`))
	if err != nil || code != http.StatusOK {
		t.Errorf("added to space: %d %v", code, err)
	}
	if n := len(r.dec.Calls()); n != 0 {
		t.Fatalf("decider called %d times by malformed events", n)
	}
	req, _ := http.NewRequest(http.MethodGet, r.ts.URL+approval.CallbackPath("gchat"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

func TestSettingsRefused(t *testing.T) {
	f := fake.New()
	defer f.Close()
	env := approval.Env{PublicURL: "https://clawd.example"}
	for name, mod := range map[string]func(map[string]any){
		"unknown key":       func(m map[string]any) { m["bot-token"] = "x" },
		"bad space":         func(m map[string]any) { m["space"] = "AAAA/../x" },
		"no credentials":    func(m map[string]any) { delete(m, "credentials") },
		"bad key":           func(m map[string]any) { m["credentials"] = `{"client_email":"a@b","private_key":"SECRETVALUE"}` },
		"bad audience type": func(m map[string]any) { m["audience-type"] = "anyone" },
		"bad project":       func(m map[string]any) { m["audience"] = "my-project" },
		"bad api base":      func(m map[string]any) { m["api-base"] = "ftp://x" },
	} {
		m := f.Settings()
		mod(m)
		_, err := gchat.New("gchat", m, env)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "SECRETVALUE") || strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: error shows the key: %v", name, err)
		}
	}
	if _, err := gchat.New("gchat", f.Settings(), approval.Env{}); err == nil {
		t.Error("accepted without a public URL")
	}
}

func TestTokenCachedAndRenewed(t *testing.T) {
	r := newRig(t, gchat.AudienceProjectNumber)
	for i := 0; i < 3; i++ {
		if _, err := r.ch.Post(ctx(t), testCard(time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.f.TokensIssued(); n != 1 {
		t.Errorf("%d tokens for three posts, want 1 (cached)", n)
	}
	r.f.RevokeTokens()
	if _, err := r.ch.Post(ctx(t), testCard(time.Now())); err != nil {
		t.Fatalf("post after revocation: %v", err)
	}
	if n := r.f.TokensIssued(); n != 2 {
		t.Errorf("%d tokens, want 2", n)
	}
}

// TestRealCore runs a held request through the approval Manager with the
// Google Chat channel: the card appears on the fake, a click approves it.
func TestRealCore(t *testing.T) {
	r := newRig(t, gchat.AudienceEndpointURL)
	m, err := approval.New(approval.Config{
		DBPath:    t.TempDir() + "/a.db",
		Channels:  []approval.Channel{r.ch},
		Approvers: map[string][]string{"gchat": {"users/111"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Shutdown)
	r.use(m)

	out := approvaltest.Async(m, context.Background(), approvaltest.Hold("agent-1", "PUT", "/repos/o/r/pulls/1/merge"))
	list := approvaltest.WaitPending(t, m, 1)
	id := list[0].ID
	card, err := r.f.WaitCard(ctx(t), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(card.Text, "<users/111>") {
		t.Errorf("approver not mentioned: %q", card.Text)
	}
	// Someone not asked is told so and nothing changes.
	reply, err := r.f.Click(ctx(t), id, approval.ActApprove, "users/999")
	if err != nil {
		t.Fatal(err)
	}
	if reply == "" {
		t.Error("no reply for the outsider")
	}
	reply, err = r.f.Click(ctx(t), id, approval.ActApprove, "users/111")
	if err != nil {
		t.Fatal(err)
	}
	o := approvaltest.Recv(t, out)
	if !o.Approved || o.By != "gchat:users/111" {
		t.Fatalf("outcome %+v (reply %q)", o, reply)
	}
	done, err := r.f.WaitCard(ctx(t), id, func(m fake.Message) bool { return len(m.Buttons) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(done.Texts, "\n"), "approved") {
		t.Errorf("final card: %q", done.Texts)
	}
}

// Tokens naming unknown keys do not make clawd fetch Google's keys again
// and again.
func TestUnknownKeysNotRefetched(t *testing.T) {
	r := newRig(t, gchat.AudienceProjectNumber)
	if _, err := r.ch.Post(ctx(t), testCard(time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := r.f.Click(ctx(t), testID, approval.ActApprove, "users/111"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if code, err := r.f.Forge(ctx(t), testID, approval.ActApprove, "users/111", fake.ForgeOtherMode); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("forgery: %d %v", code, err)
		}
	}
	if n := r.f.KeyFetches(); n != 1 {
		t.Errorf("keys fetched %d times, want 1", n)
	}
}

// A token endpoint that refuses gives an error that names the failure and
// never the key or the assertion.
func TestTokenErrorHidesKey(t *testing.T) {
	f := fake.New()
	defer f.Close()
	m := f.Settings()
	m["token-url"] = f.URL() + "/v1/nowhere"
	ch, err := gchat.New("gchat", m, approval.Env{PublicURL: "https://clawd.example"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Post(ctx(t), testCard(time.Now()))
	if err == nil {
		t.Fatal("post without a token succeeded")
	}
	if s := err.Error(); !strings.Contains(s, "token") || strings.Contains(s, "PRIVATE") || strings.Contains(s, "eyJ") {
		t.Errorf("error %q", s)
	}
	if f.Messages() != 0 {
		t.Error("a message was posted")
	}
}
