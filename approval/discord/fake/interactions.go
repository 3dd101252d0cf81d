package fake

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type signedRequest struct {
	body []byte
	ts   string
	sig  string
}

// sign signs body at ts as Discord does: Ed25519 over timestamp + body.
func (s *Server) sign(key ed25519.PrivateKey, ts string, body []byte) string {
	return hex.EncodeToString(ed25519.Sign(key, append([]byte(ts), body...)))
}

func (s *Server) signNow(body []byte) signedRequest {
	ts := strconv.FormatInt(s.Now().Unix(), 10)
	return signedRequest{body: body, ts: ts, sig: s.sign(s.priv, ts, body)}
}

// post sends one interactions-endpoint request and returns its status and
// body. An empty sig or ts leaves that header out.
func (s *Server) post(ctx context.Context, endpoint string, r signedRequest) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", endpoint, bytes.NewReader(r.body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Discord-Interactions/1.0 (+https://discord.com)")
	if r.sig != "" {
		req.Header.Set("X-Signature-Ed25519", r.sig)
	}
	if r.ts != "" {
		req.Header.Set("X-Signature-Timestamp", r.ts)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, resp.Header, nil
}

// SetInteractionsURL is the developer portal's "Interactions Endpoint URL":
// like Discord it first checks that the URL answers a signed PING with a
// PONG and refuses a PING with a bad signature with 401. From then on
// clicks go there instead of over the Gateway.
func (s *Server) SetInteractionsURL(ctx context.Context, endpoint string) error {
	status, body, err := s.Ping(ctx, endpoint)
	if err != nil {
		return err
	}
	if status != http.StatusOK || !isPong(body) {
		return fmt.Errorf("interactions endpoint: PING answered %d %s, want 200 {\"type\":1}", status, body)
	}
	ping, _ := json.Marshal(s.pingInteraction())
	bad := s.signNow(ping)
	bad.sig = flip(bad.sig)
	status, _, _, err = s.post(ctx, endpoint, bad)
	if err != nil {
		return err
	}
	if status != http.StatusUnauthorized {
		return fmt.Errorf("interactions endpoint: a PING with a bad signature got %d, want 401", status)
	}
	s.mu.Lock()
	s.endpoint = endpoint
	s.mu.Unlock()
	return nil
}

func isPong(b []byte) bool {
	var r struct {
		Type int `json:"type"`
	}
	return json.Unmarshal(b, &r) == nil && r.Type == 1
}

func (s *Server) pingInteraction() *Interaction {
	s.mu.Lock()
	id := s.snowflakeLocked()
	s.mu.Unlock()
	return &Interaction{ID: id, ApplicationID: s.AppID, Type: 1, Token: "cGluZw." + randHex(16), Version: 1,
		User: &User{ID: "643945264868098049", Username: "discord"}}
}

// Ping sends a signed PING to endpoint and returns the answer.
func (s *Server) Ping(ctx context.Context, endpoint string) (int, []byte, error) {
	b, _ := json.Marshal(s.pingInteraction())
	status, body, _, err := s.post(ctx, endpoint, s.signNow(b))
	return status, body, err
}

func (s *Server) deliverHTTP(ctx context.Context, in *Interaction) (Reply, error) {
	b, _ := json.Marshal(in)
	r := s.signNow(b)
	s.mu.Lock()
	endpoint := s.endpoint
	s.last = &r
	s.mu.Unlock()
	return s.answerHTTP(ctx, endpoint, in.ID, r)
}

func (s *Server) answerHTTP(ctx context.Context, endpoint, id string, r signedRequest) (Reply, error) {
	start := time.Now()
	status, body, hdr, err := s.post(ctx, endpoint, r)
	if err != nil {
		return Reply{}, err
	}
	if status != http.StatusOK {
		return Reply{}, &StatusError{Status: status, Body: strings.TrimSpace(string(body))}
	}
	if time.Since(start) > 3*time.Second {
		s.violation("interactions endpoint answered after 3 s")
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.violation("interactions endpoint: Content-Type %q, want application/json", ct)
	}
	rep, errs := checkResponse(body)
	for _, e := range errs {
		s.violation("interactions endpoint: %s", e)
	}
	if len(errs) > 0 {
		return Reply{}, errors.New("interactions endpoint: invalid response: " + errs[0])
	}
	rep.InteractionID, rep.Via = id, "http"
	s.mu.Lock()
	s.replies = append(s.replies, rep)
	s.mu.Unlock()
	return rep, nil
}

// StatusError is a non-200 answer from the interactions endpoint.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("interactions endpoint: HTTP %d: %s", e.Status, e.Body)
}

// Forgery is a way a request to the interactions endpoint is not what
// Discord signed.
type Forgery int

const (
	BadSignature    Forgery = iota // a valid signature with one bit flipped
	NoSignature                    // no X-Signature-* headers
	OtherKey                       // signed with a key that is not the application's
	StaleTimestamp                 // correctly signed, timestamp 10 minutes old
	FutureTimestamp                // correctly signed, timestamp 10 minutes ahead
	TamperedBody                   // signed, then the clicker's user ID changed
)

// ClickForged sends the click for act as userID to the interactions
// endpoint, forged as f, and returns the endpoint's HTTP status.
func (s *Server) ClickForged(ctx context.Context, approvalID, act, userID string, f Forgery) (int, error) {
	in, err := s.interaction(approvalID, act, userID)
	if err != nil {
		return 0, err
	}
	b, _ := json.Marshal(in)
	r := s.signNow(b)
	switch f {
	case BadSignature:
		r.sig = flip(r.sig)
	case NoSignature:
		r.sig, r.ts = "", ""
	case OtherKey:
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		r.sig = s.sign(other, r.ts, b)
	case StaleTimestamp, FutureTimestamp:
		d := -10 * time.Minute
		if f == FutureTimestamp {
			d = -d
		}
		r.ts = strconv.FormatInt(s.Now().Add(d).Unix(), 10)
		r.sig = s.sign(s.priv, r.ts, b)
	case TamperedBody:
		in.Member.User.ID = "999999999999999999"
		r.body, _ = json.Marshal(in)
	}
	s.mu.Lock()
	endpoint := s.endpoint
	s.mu.Unlock()
	status, _, _, err := s.post(ctx, endpoint, r)
	return status, err
}

// Replay resends the last click delivered to the interactions endpoint,
// byte for byte with its valid signature, and returns the HTTP status.
func (s *Server) Replay(ctx context.Context) (int, error) {
	s.mu.Lock()
	r, endpoint := s.last, s.endpoint
	s.mu.Unlock()
	if r == nil {
		return 0, errors.New("nothing to replay")
	}
	status, _, _, err := s.post(ctx, endpoint, *r)
	return status, err
}

// PostSigned sends body, correctly signed now, to the interactions
// endpoint (for malformed or foreign interactions).
func (s *Server) PostSigned(ctx context.Context, body []byte) (int, []byte, error) {
	s.mu.Lock()
	endpoint := s.endpoint
	s.mu.Unlock()
	status, b, _, err := s.post(ctx, endpoint, s.signNow(body))
	return status, b, err
}

func flip(sig string) string {
	b, _ := hex.DecodeString(sig)
	if len(b) > 0 {
		b[0] ^= 1
	}
	return hex.EncodeToString(b)
}
