package slack

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/slack/fake"
)

func TestCardShape(t *testing.T) {
	r := newRig(t, nil)
	c := testCard()
	ref := r.post(t, c)
	if ref != fake.ChannelID+"|1700000000.000001" {
		t.Fatalf("ref %q", ref)
	}
	m, ok := r.fk.Card(testID)
	if !ok {
		t.Fatal("no card on Slack")
	}
	text := m.AllText()
	if !strings.HasPrefix(text, "Merge pull request #7 in acme/api") {
		t.Errorf("summary not first:\n%s", text)
	}
	if m.Blocks[0]["type"] != "header" {
		t.Errorf("first block is %v, want the header", m.Blocks[0]["type"])
	}
	for _, want := range []string{
		"`PUT` https://api.github.com/repos/acme/api/pulls/7/merge",
		"Container *agent1* (docker)", "rule `gh-merge`", "expires in 5m0s",
		"```{\n  \"merge_method\": \"squash\", \"x\": \"'''\"\n}```",
		"Asked: <@U0ALICE> <@U0BOB>",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("card lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "<!channel>") && !strings.HasPrefix(text, "Merge pull request #7 in acme/api <!channel>\n") {
		t.Errorf("agent text can ping the channel:\n%s", text)
	}
	// Outside the plain-text header, agent text is escaped.
	if rest := text[strings.Index(text, "\n"):]; strings.Contains(rest, "<!channel>") {
		t.Errorf("mrkdwn carries <!channel>:\n%s", rest)
	}
	if m.Text != "Approval needed: Merge pull request #7 in acme/api &lt;!channel&gt;" {
		t.Errorf("fallback text %q", m.Text)
	}
	want := c.Buttons()
	if len(m.Buttons) != len(want) {
		t.Fatalf("buttons %+v", m.Buttons)
	}
	for i, b := range m.Buttons {
		if b.ActionID != "clawd_"+want[i].Act || b.Value != want[i].Value || b.Text != want[i].Label || b.Style != want[i].Style {
			t.Errorf("button %d = %+v, want %+v", i, b, want[i])
		}
	}
	if m.Buttons[0].Value != "a:"+testID+":"+testDigest[:16] {
		t.Errorf("approve value %q", m.Buttons[0].Value)
	}

	// A route may send the card to another channel.
	c.Target = "C0OTHER"
	if ref := r.post(t, c); !strings.HasPrefix(ref, "C0OTHER|") {
		t.Errorf("ref for a target: %q", ref)
	}
	c.Target = "C0 ; x"
	if _, err := r.ch.Post(tctx(t), c); err == nil {
		t.Error("posted to a malformed target")
	}
	c.Target = ""

	// No grants: no "Approve 15 min".
	c.GrantsAllowed = false
	_, blocks := Message(c)
	b, _ := json.Marshal(blocks)
	if strings.Contains(string(b), "clawd_g") || !strings.Contains(string(b), "clawd_d") {
		t.Errorf("buttons without grants: %s", b)
	}
}

// Everything the agent controls is long here; the card must still fit
// Slack's limits (the fake records any block over them).
func TestCardLimits(t *testing.T) {
	r := newRig(t, nil)
	c := testCard()
	c.Summary = strings.Repeat("Delete <everything> & ", 500) // 11 000 bytes, grows when escaped
	c.URL = "https://api.example.com/" + strings.Repeat("a&b<", 3000)
	c.Method = strings.Repeat("X`", 40)
	c.Container.Name = strings.Repeat("n<", 400)
	c.Rule = strings.Repeat("r`", 400)
	c.Body = strings.Repeat("ü<&`", 1024) // 4 KiB of multi-byte, escaping-heavy text
	c.BodyTruncated, c.BodySize = true, 1<<20
	for i := range 60 {
		c.People = append(c.People, "U0PERSON"+strings.Repeat("X", i%5))
	}
	c.Required = 3
	for range 20 {
		c.Votes = append(c.Votes, approval.Vote{By: "slack:U0X", Display: strings.Repeat("<b>", 100)})
	}
	r.post(t, c)
	m, ok := r.fk.Card(testID)
	if !ok {
		t.Fatal("no card")
	}
	if len(m.Blocks) > 50 {
		t.Errorf("%d blocks", len(m.Blocks))
	}
	text := m.AllText()
	for _, want := range []string{"… (preview of 1048576 bytes)", "… (cut to fit Slack)", "0 of 20 approvals"[2:]} {
		if !strings.Contains(text, want) {
			t.Errorf("card lacks %q", want)
		}
	}
	for _, b := range m.Blocks {
		if tx, ok := b["text"].(map[string]any); ok && tx["type"] == "mrkdwn" {
			s := tx["text"].(string)
			if !utf8.ValidString(s) {
				t.Errorf("block %v: invalid UTF-8", b["block_id"])
			}
			// A cut never leaves half an entity behind.
			if i := strings.LastIndexByte(s, '&'); i >= 0 && !strings.Contains(s[i:], ";") {
				t.Errorf("block %v ends in a broken entity: %q", b["block_id"], s[max(0, len(s)-20):])
			}
			if strings.Contains(s, "<b>") || strings.Contains(s, "<everything>") {
				t.Errorf("block %v carries unescaped agent markup", b["block_id"])
			}
		}
	}
	if !strings.HasPrefix(m.Blocks[1]["block_id"].(string), "clawd_"+testID+"_summary") {
		t.Errorf("a cut header is not followed by the full summary: %v", m.Blocks[1]["block_id"])
	}

	// Every status, as Update would send it, fits too.
	for _, st := range []string{approval.Approved, approval.Denied, approval.TimedOut, approval.Cancelled, approval.Expired} {
		c.Status, c.By, c.Reason = st, "slack:"+strings.Repeat("U", 500), strings.Repeat("because <", 500)
		if err := r.ch.Update(tctx(t), c, fake.ChannelID+"|1700000000.000001"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUpdateRemovesButtons(t *testing.T) {
	r := newRig(t, nil)
	c := testCard()
	c.Required = 2
	ref := r.post(t, c)
	m, _ := r.fk.Card(testID)
	if !strings.Contains(m.AllText(), "0 of 2 approvals") {
		t.Errorf("two-person card lacks the vote count:\n%s", m.AllText())
	}

	// First of two approvals: still pending, buttons stay, the vote shows.
	c.Votes = []approval.Vote{{By: "slack:U0ALICE", Display: "alice", At: now}}
	if err := r.ch.Update(tctx(t), c, ref); err != nil {
		t.Fatal(err)
	}
	m, _ = r.fk.Card(testID)
	if m.Updates != 1 || len(m.Buttons) != 3 || !strings.Contains(m.AllText(), "1 of 2 approvals: slack:U0ALICE (alice)") {
		t.Errorf("after one vote: %d updates, %d buttons:\n%s", m.Updates, len(m.Buttons), m.AllText())
	}

	// Decided: no buttons, the outcome, who, why, the votes.
	c.Status, c.By, c.Reason = approval.Approved, "slack:U0BOB", "approved for 15m"
	c.Votes = append(c.Votes, approval.Vote{By: "slack:U0BOB", Display: "bob", At: now})
	if err := r.ch.Update(tctx(t), c, ref); err != nil {
		t.Fatal(err)
	}
	m, _ = r.fk.Card(testID)
	text := m.AllText()
	if len(m.Buttons) != 0 {
		t.Errorf("decided card still has buttons: %+v", m.Buttons)
	}
	for _, want := range []string{":white_check_mark: Approved by slack:U0BOB: approved for 15m", "2 of 2 approvals: slack:U0ALICE (alice), slack:U0BOB (bob)"} {
		if !strings.Contains(text, want) {
			t.Errorf("decided card lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "expires in") || strings.Contains(text, "Asked:") {
		t.Errorf("decided card still asks:\n%s", text)
	}
	if !strings.HasPrefix(m.Text, "Approved: ") {
		t.Errorf("fallback %q", m.Text)
	}

	c.Status, c.By, c.Reason, c.Votes, c.Required = approval.TimedOut, "", "", nil, 1
	if err := r.ch.Update(tctx(t), c, ref); err != nil {
		t.Fatal(err)
	}
	m, _ = r.fk.Card(testID)
	if !strings.Contains(m.AllText(), ":hourglass: Timed out (denied)") || len(m.Buttons) != 0 {
		t.Errorf("timed-out card:\n%s", m.AllText())
	}

	// A ref that is not ours is an error, not a call.
	if err := r.ch.Update(tctx(t), c, "garbage"); err == nil {
		t.Error("bad ref accepted")
	}
}

func TestExpiresNeverNegative(t *testing.T) {
	c := testCard()
	c.Now = c.Expires.Add(time.Minute)
	_, blocks := Message(c)
	b, _ := json.Marshal(blocks)
	if !strings.Contains(string(b), "expires in 0s") {
		t.Errorf("overdue card: %s", b)
	}
}
