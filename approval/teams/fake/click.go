package fake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Click presses the card's Action.Execute button with that Act ("a", "g",
// "d") as the Teams user with AAD object ID userID, the way the Bot
// Connector delivers it (an adaptiveCard/action invoke with a signed JWT),
// and returns what Teams shows the clicker: the result line of the card
// clawd answers with, or the message it answers with.
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	status, body, err := s.click(ctx, approvalID, act, userID, true, Genuine)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmtErr("click: clawd answered HTTP %d: %s", status, strings.TrimSpace(string(body)))
	}
	return s.invokeAnswer(approvalID, body)
}

// ClickSubmit presses the button's Action.Submit fallback (clients without
// Universal Actions): a message activity with the button's data; clawd
// replies in the card's thread, and that reply is returned.
func (s *Server) ClickSubmit(ctx context.Context, approvalID, act, userID string) (string, error) {
	before := 0
	if m, ok := s.Card(approvalID); ok {
		before = len(m.Replies)
	}
	status, body, err := s.click(ctx, approvalID, act, userID, false, Genuine)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmtErr("submit: clawd answered HTTP %d: %s", status, strings.TrimSpace(string(body)))
	}
	// The reply is posted before clawd's answer completes.
	m, _ := s.Card(approvalID)
	if len(m.Replies) <= before {
		return "", fmtErr("submit: clawd did not reply in the thread")
	}
	return unescape(m.Replies[len(m.Replies)-1]), nil
}

// Forge clicks like Click but forged one way; it returns clawd's HTTP
// status (401 expected).
func (s *Server) Forge(ctx context.Context, approvalID, act, userID string, f Forgery) (int, error) {
	status, _, err := s.click(ctx, approvalID, act, userID, true, f)
	return status, err
}

// Replay POSTs the last genuine click again, byte for byte with its token;
// it returns clawd's HTTP status.
func (s *Server) Replay(ctx context.Context) (int, error) {
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	if last == nil {
		return 0, fmtErr("replay: no click yet")
	}
	status, _, err := s.deliver(ctx, last.body, last.token)
	return status, err
}

// Deliver POSTs raw as an activity with a genuine token for serviceURL;
// for tests of malformed activities.
func (s *Server) Deliver(ctx context.Context, raw []byte) (int, error) {
	tok, err := s.sign(Genuine)
	if err != nil {
		return 0, err
	}
	status, _, err := s.deliver(ctx, raw, tok)
	return status, err
}

func (s *Server) invokeAnswer(approvalID string, body []byte) (string, error) {
	var ir struct {
		StatusCode int             `json:"statusCode"`
		Type       string          `json:"type"`
		Value      json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(body, &ir); err != nil {
		s.violate("invoke response: not JSON: %v", err)
		return "", fmtErr("invoke response: %v", err)
	}
	if ir.StatusCode != 200 {
		s.violate("invoke response: statusCode %d", ir.StatusCode)
	}
	switch ir.Type {
	case "application/vnd.microsoft.card.adaptive":
		var card map[string]any
		if err := json.Unmarshal(ir.Value, &card); err != nil {
			s.violate("invoke response: card value: %v", err)
			return "", fmtErr("invoke card: %v", err)
		}
		if len(ir.Value) > MaxMessage {
			s.violate("invoke response: card of %d bytes", len(ir.Value))
		}
		if _, ok := s.checkCard("invoke response", card); !ok {
			return "", fmtErr("invoke response card is invalid")
		}
		s.mu.Lock()
		s.invoked[approvalID] = card
		s.mu.Unlock()
		return resultText(card), nil
	case "application/vnd.microsoft.activity.message":
		var msg string
		if err := json.Unmarshal(ir.Value, &msg); err != nil || msg == "" {
			s.violate("invoke response: message value must be a non-empty string")
			return "", fmtErr("invoke message")
		}
		return unescape(msg), nil
	}
	s.violate("invoke response: type %q", ir.Type)
	return "", fmtErr("invoke response type %q", ir.Type)
}

// click builds the activity Teams sends for a press of the button and
// delivers it, signed (or forged) as f says.
func (s *Server) click(ctx context.Context, approvalID, act, userID string, execute bool, f Forgery) (int, []byte, error) {
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
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	conv := ConversationID + ";messageid=" + m.ActivityID
	recipient := "28:" + AppID
	switch f {
	case ForgeOtherConversation:
		conv = "19:someone-elses@thread.tacv2;messageid=" + m.ActivityID
	case ForgeOtherRecipient:
		recipient = "28:99999999-9999-4999-8999-999999999999"
	}
	activity := map[string]any{
		"id":             "f:" + hex.EncodeToString(b),
		"timestamp":      s.now().UTC().Format(time.RFC3339Nano),
		"localTimestamp": s.now().Format(time.RFC3339Nano),
		"serviceUrl":     s.ServiceURL(),
		"channelId":      "msteams",
		"from":           map[string]any{"id": "29:1" + userID, "name": "User " + userID, "aadObjectId": userID},
		"conversation": map[string]any{"isGroup": true, "conversationType": "channel", "tenantId": TenantID,
			"id": conv},
		"recipient":   map[string]any{"id": recipient, "name": "clawd"},
		"entities":    []any{map[string]any{"type": "clientInfo", "locale": "en-US", "platform": "Web"}},
		"channelData": map[string]any{"tenant": map[string]any{"id": TenantID}, "source": map[string]any{"name": "message"}},
		"replyToId":   m.ActivityID,
		"locale":      "en-US",
	}
	data := map[string]any{"v": button.Value}
	if execute {
		activity["type"] = "invoke"
		activity["name"] = "adaptiveCard/action"
		activity["value"] = map[string]any{
			"action":  map[string]any{"type": "Action.Execute", "title": button.Title, "verb": button.Verb, "data": data},
			"trigger": "manual",
		}
	} else {
		activity["type"] = "message"
		activity["value"] = data
	}
	raw, _ := json.Marshal(activity)
	if f == ForgeMalformed {
		raw = append([]byte("{not json "), raw...)
	}
	tok, err := s.sign(f)
	if err != nil {
		return 0, nil, err
	}
	if f == Genuine {
		s.mu.Lock()
		s.last = &captured{body: raw, token: tok}
		s.mu.Unlock()
	}
	return s.deliver(ctx, raw, tok)
}

// sign makes the Bot Connector's token for an activity (or a forgery).
func (s *Server) sign(f Forgery) (string, error) {
	if f == ForgeNoToken {
		return "", nil
	}
	now := s.now()
	cl := jwt.MapClaims{
		"serviceurl": s.ServiceURL(),
		"nbf":        now.Add(-time.Minute).Unix(),
		"exp":        now.Add(time.Hour).Unix(),
		"iss":        Issuer,
		"aud":        AppID,
	}
	s.mu.Lock()
	k := s.keys[0]
	s.mu.Unlock()
	switch f {
	case ForgeWrongKey:
		k = key{kid: k.kid, priv: s.stray.priv}
	case ForgeUnknownKey:
		k = s.stray
	case ForgeUnendorsed:
		k = s.unendorsed
	case ForgeWrongAudience:
		cl["aud"] = "99999999-9999-4999-8999-999999999999"
	case ForgeWrongIssuer:
		cl["iss"] = "https://sts.windows.net/" + TenantID + "/"
	case ForgeExpired:
		cl["nbf"], cl["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	case ForgeNotYetValid:
		cl["nbf"], cl["exp"] = now.Add(time.Hour).Unix(), now.Add(2*time.Hour).Unix()
	case ForgeServiceURL:
		cl["serviceurl"] = "https://smba.trafficmanager.net/evil/"
	case ForgeHS256:
		t := jwt.NewWithClaims(jwt.SigningMethodHS256, cl)
		t.Header["kid"] = k.kid
		return t.SignedString(k.priv.N.Bytes())
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, cl)
	t.Header["kid"] = k.kid
	t.Header["x5t"] = k.kid
	return t.SignedString(k.priv)
}

func (s *Server) deliver(ctx context.Context, raw []byte, tok string) (int, []byte, error) {
	s.mu.Lock()
	ep := s.endpoint
	s.mu.Unlock()
	if ep == "" {
		return 0, nil, fmtErr("no endpoint: call SetEndpoint with clawd's messaging endpoint")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep, bytes.NewReader(raw))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Microsoft-SkypeBotApi (Microsoft-BotFramework/3.0)")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, nil
}
