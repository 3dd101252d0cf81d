package fake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ClickResult is what the server got back from the integration.
type ClickResult struct {
	Status    int
	Ephemeral string // ephemeral_text: what the clicker sees
	Updated   bool   // the answer replaced the post
}

// Click presses the approval card's button with that Act as userID,
// exactly as the Mattermost server does it: a POST of the action request
// with the button's stored context to its integration URL. It applies an
// "update" in the answer to the post and returns the ephemeral text the
// clicker would see.
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	res, err := s.Forge(ctx, approvalID, act, userID, Genuine)
	if err != nil {
		return "", err
	}
	if res.Status != http.StatusOK {
		return "", fmt.Errorf("integration answered HTTP %d", res.Status)
	}
	return res.Ephemeral, nil
}

// Forge delivers a click on the button with that Act, forged in the way
// f says (Genuine: as the server does).
func (s *Server) Forge(ctx context.Context, approvalID, act, userID string, f Forgery) (ClickResult, error) {
	s.mu.Lock()
	m, ok := s.posts[s.byApproval[approvalID]]
	var msg Message
	if ok {
		msg = copyMsg(m)
	}
	name := s.names[userID]
	s.mu.Unlock()
	if !ok {
		return ClickResult{}, fmt.Errorf("no card for approval %s", approvalID)
	}
	var btn *Action
	var other *Action
	for i := range msg.Actions {
		v, _ := msg.Actions[i].Context["v"].(string)
		if strings.HasPrefix(v, act+":") {
			btn = &msg.Actions[i]
		} else if other == nil {
			other = &msg.Actions[i]
		}
	}
	if btn == nil {
		return ClickResult{}, fmt.Errorf("the card of %s has no %q button", approvalID, act)
	}
	if name == "" {
		name = "user" + userID[:6]
	}
	ctxMap := map[string]any{}
	for k, v := range btn.Context {
		ctxMap[k] = v
	}
	req := map[string]any{
		"user_id": userID, "user_name": name, "channel_id": msg.ChannelID, "channel_name": "clawd-approvals",
		"team_id": TeamID, "team_name": "acme", "post_id": msg.PostID, "trigger_id": triggerID(),
		"type": btn.Type, "data_source": "", "context": ctxMap,
	}
	switch f {
	case ForgeWrongSecret:
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		ctxMap["t"] = base64.RawURLEncoding.EncodeToString(b)
	case ForgeOtherChannel:
		req["channel_id"] = NewID()
	case ForgeOtherPost:
		req["post_id"] = NewID()
	case ForgeNoContext:
		delete(req, "context")
	case ForgeOtherValue:
		if other == nil {
			return ClickResult{}, errors.New("the card has one button only")
		}
		ctxMap["v"] = other.Context["v"]
	}
	body, _ := json.Marshal(req)
	if f == ForgeMalformed {
		body = []byte(`{"user_id": "` + userID + `", "context": {"v": `)
	}
	return s.deliver(ctx, btn.URL, msg.PostID, body, f == Genuine)
}

// Replay sends the last delivered click again, byte for byte.
func (s *Server) Replay(ctx context.Context) (ClickResult, error) {
	s.mu.Lock()
	body, u := s.last, s.lastURL
	s.mu.Unlock()
	if body == nil {
		return ClickResult{}, errors.New("no click delivered yet")
	}
	return s.deliver(ctx, u, "", body, false)
}

// Deliver POSTs a raw body to the callback URL (as if from the server).
func (s *Server) Deliver(ctx context.Context, body []byte) (ClickResult, error) {
	s.mu.Lock()
	u := s.callback
	s.mu.Unlock()
	return s.deliver(ctx, u, "", body, false)
}

func (s *Server) deliver(ctx context.Context, u, postID string, body []byte, record bool) (ClickResult, error) {
	if u == "" {
		return ClickResult{}, errors.New("no integration URL")
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return ClickResult{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	if record {
		s.mu.Lock()
		s.last, s.lastURL = body, u
		s.mu.Unlock()
	}
	resp, err := s.client.Do(hr)
	if err != nil {
		return ClickResult{}, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res := ClickResult{Status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		return res, nil
	}
	var out struct {
		Update *struct {
			Message *string         `json:"message"`
			Props   json.RawMessage `json:"props"`
		} `json:"update"`
		EphemeralText    string `json:"ephemeral_text"`
		GotoLocation     string `json:"goto_location"`
		SkipSlackParsing bool   `json:"skip_slack_parsing"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		s.violate("click answer is not a PostActionIntegrationResponse: %v", err)
		return res, nil
	}
	res.Ephemeral = out.EphemeralText
	if out.Update != nil && postID != "" {
		s.mu.Lock()
		m, ok := s.posts[postID]
		var cp Message
		if ok {
			cp = copyMsg(m)
		}
		s.mu.Unlock()
		if ok {
			if out.Update.Message == nil {
				s.violate("click answer update has no message (the post's message would be cleared)")
			}
			msg := ""
			if out.Update.Message != nil {
				msg = *out.Update.Message
			}
			rec := &recorder{h: http.Header{}}
			if s.apply(rec, &cp, msg, out.Update.Props, "click") {
				cp.Updates++
				s.mu.Lock()
				*m = cp
				if m.ApprovalID != "" {
					s.byApproval[m.ApprovalID] = m.PostID
				}
				s.notifyLocked()
				s.mu.Unlock()
				res.Updated = true
			}
		}
	}
	return res, nil
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(c int)           { r.code = c }

func triggerID() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
