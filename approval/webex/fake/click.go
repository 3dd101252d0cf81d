package fake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Forgery is one way a click notification can be forged.
type Forgery int

// Forgeries.
const (
	Genuine             Forgery = iota
	ForgeBadSignature           // signed with another secret
	ForgeNoSignature            // no X-Spark-Signature
	ForgeUnknownAction          // genuinely signed, names an action id Webex does not have
	ForgeForeignMessage         // a real action, on a bot message clawd did not post
	ForgeForeignRoom            // a real action on the card, reported in another room
	ForgeInputsInBody           // genuinely signed; the body claims other inputs and another person than the action has
	ForgeMalformed              // genuinely signed, not JSON
	ForgeWrongResource          // genuinely signed, a "messages" notification
	ForgeStale                  // a real action created two hours ago
	ForgeOtherApproval          // a real action on the card whose inputs are another approval's button
)

// Click presses the card's button with that Act ("a", "g", "d") as the
// person personID the way Webex delivers it: an attachment action is
// recorded on the card and the attachmentActions/created notification is
// POSTed, signed, to the registered webhook's targetUrl (or SetEndpoint).
// It returns the bot's reply in the card's thread, as Webex shows it.
func (s *Server) Click(ctx context.Context, approvalID, act, personID string) (string, error) {
	m, ok := s.Card(approvalID)
	if !ok {
		return "", fmtErr("no card for approval %s", approvalID)
	}
	before := len(m.Replies)
	status, body, err := s.click(ctx, approvalID, act, personID, Genuine)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmtErr("click: clawd answered HTTP %d: %s", status, strings.TrimSpace(string(body)))
	}
	// clawd replies before it answers the notification.
	s.mu.Lock()
	replies := s.threadLocked(m.ParentID)
	s.mu.Unlock()
	if len(replies) <= before {
		return "", fmtErr("click: clawd did not reply in the thread")
	}
	return replies[len(replies)-1], nil
}

// threadLocked is the rendered text replies in head's thread, in order.
func (s *Server) threadLocked(head string) []string {
	var out []string
	for _, msg := range s.sortedLocked() {
		if msg.ParentID == head && msg.Card == nil && !msg.Deleted {
			out = append(out, s.render(msg.Markdown))
		}
	}
	return out
}

func (s *Server) sortedLocked() []*Message {
	out := make([]*Message, 0, len(s.msgs))
	for _, m := range s.msgs {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// Forge clicks like Click but forged one way; it returns clawd's HTTP
// status.
func (s *Server) Forge(ctx context.Context, approvalID, act, personID string, f Forgery) (int, error) {
	status, _, err := s.click(ctx, approvalID, act, personID, f)
	return status, err
}

// Replay POSTs the last genuine notification again, byte for byte with its
// signature; it returns clawd's HTTP status.
func (s *Server) Replay(ctx context.Context) (int, error) {
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	if last == nil {
		return 0, fmtErr("replay: no click yet")
	}
	status, _, err := deliver(ctx, last.url, last.body, last.sig)
	return status, err
}

// Deliver POSTs raw to clawd signed with the webhook's secret.
func (s *Server) Deliver(ctx context.Context, raw []byte) (int, error) {
	target, hook, err := s.target()
	if err != nil {
		return 0, err
	}
	status, _, err := deliver(ctx, target, raw, sign(hook.Secret, raw))
	return status, err
}

// target is where notifications go and the webhook they are for: the
// active attachmentActions webhook, else SetEndpoint with WebhookSecret.
func (s *Server) target() (string, Webhook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.webhooksLocked() {
		if h.Resource == "attachmentActions" && (h.Event == "created" || h.Event == "all") && h.Status == "active" {
			return h.TargetURL, h, nil
		}
	}
	if s.endpoint == "" {
		return "", Webhook{}, fmtErr("no attachmentActions webhook registered and no SetEndpoint")
	}
	return s.endpoint, Webhook{ID: id("WEBHOOK", "operator"), Name: "clawd (operator)", TargetURL: s.endpoint,
		Resource: "attachmentActions", Event: "created", Secret: WebhookSecret, Status: "active",
		Created: "2026-01-01T00:00:00.000Z", OrgID: OrgID, CreatedBy: BotID, AppID: AppID, OwnedBy: "creator"}, nil
}

func (s *Server) click(ctx context.Context, approvalID, act, personID string, f Forgery) (int, []byte, error) {
	m, ok := s.Card(approvalID)
	if !ok {
		return 0, nil, fmtErr("no card for approval %s", approvalID)
	}
	var button *Action
	for i, a := range m.Actions {
		if strings.HasPrefix(a.Value, act+":") {
			button = &m.Actions[i]
		}
	}
	if button == nil {
		return 0, nil, fmtErr("card for %s has no %q button", approvalID, act)
	}
	target, hook, err := s.target()
	if err != nil {
		return 0, nil, err
	}
	now := s.now().UTC()
	a := &action{ID: id("ATTACHMENT_ACTION", "a"+randHex(8)), Type: "submit", MessageID: m.ID,
		Inputs: map[string]any{"v": button.Value}, PersonID: personID, RoomID: m.RoomID,
		Created: now.Format(time.RFC3339Nano)}
	switch f {
	case ForgeForeignMessage:
		// A card the bot posted some other way (another process with the
		// same token), with the same buttons.
		s.mu.Lock()
		s.seq++
		foreign := &Message{ID: id("MESSAGE", fmt.Sprintf("foreign%d", s.seq)), RoomID: m.RoomID, PersonID: BotID,
			Markdown: "a card", Card: m.Card, seq: s.seq, created: s.now()}
		s.msgs[foreign.ID] = foreign
		s.mu.Unlock()
		a.MessageID = foreign.ID
	case ForgeForeignRoom:
		a.RoomID = OtherRoomID
	case ForgeStale:
		a.Created = now.Add(-2 * time.Hour).Format(time.RFC3339Nano)
	case ForgeOtherApproval:
		p := strings.Split(button.Value, ":")
		a.Inputs = map[string]any{"v": p[0] + ":zzzzzzzzzzzzzzzzzzzzzzzzzz:" + p[2]}
	}
	if f != ForgeUnknownAction {
		s.mu.Lock()
		s.actions[a.ID] = a
		s.mu.Unlock()
	}
	data := map[string]any{"id": a.ID, "type": a.Type, "messageId": a.MessageID, "personId": a.PersonID,
		"roomId": a.RoomID, "created": a.Created}
	resource := "attachmentActions"
	switch f {
	case ForgeInputsInBody:
		var other string
		for _, b := range m.Actions {
			if b.Value != button.Value {
				other = b.Value
			}
		}
		data["inputs"] = map[string]any{"v": other}
		data["personId"] = Bob
		if personID == Bob {
			data["personId"] = Alice
		}
	case ForgeWrongResource:
		resource = "messages"
	}
	n := map[string]any{
		"id": hook.ID, "name": hook.Name, "targetUrl": hook.TargetURL, "resource": resource, "event": "created",
		"orgId": OrgID, "createdBy": BotID, "appId": AppID, "ownedBy": "creator", "status": "active",
		"created": hook.Created, "actorId": personID, "data": data,
	}
	if hook.Filter != "" {
		n["filter"] = hook.Filter
	}
	raw, _ := json.Marshal(n)
	if f == ForgeMalformed {
		raw = append([]byte("{not json "), raw...)
	}
	sig := sign(hook.Secret, raw)
	switch f {
	case ForgeBadSignature:
		sig = sign("not-the-"+hook.Secret, raw)
	case ForgeNoSignature:
		sig = ""
	}
	if f == Genuine {
		s.mu.Lock()
		s.last = &captured{body: raw, sig: sig, url: target}
		s.mu.Unlock()
	}
	return deliver(ctx, target, raw, sig)
}

func sign(secret string, raw []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(raw)
	return hex.EncodeToString(m.Sum(nil))
}

func deliver(ctx context.Context, target string, raw []byte, sig string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(raw))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if sig != "" {
		req.Header.Set("X-Spark-Signature", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, nil
}
