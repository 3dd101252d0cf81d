package fake

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, s *Server, auth bool, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestPublishChecks(t *testing.T) {
	act := func(n int) string {
		var a []string
		for range n {
			a = append(a, `{"action":"http","label":"x","url":"URL/reply","method":"POST","body":"t","clear":true}`)
		}
		return "[" + strings.Join(a, ",") + "]"
	}
	for name, tc := range map[string]struct {
		auth bool
		body string
		want string
	}{
		"four actions":  {true, `{"topic":"t1","message":"m","actions":` + act(4) + `}`, "only 3 actions"},
		"no auth":       {false, `{"topic":"t1","message":"m"}`, "without the access token"},
		"unknown field": {true, `{"topic":"t1","message":"m","colour":"red"}`, "unknown field"},
		"long title":    {true, `{"topic":"t1","title":"` + strings.Repeat("x", 257) + `","message":"m"}`, "title is 257 bytes"},
		"long message":  {true, `{"topic":"t1","message":"` + strings.Repeat("x", 4097) + `"}`, "message is 4097 bytes"},
		"markdown":      {true, `{"topic":"t1","message":"m","markdown":true}`, "markdown"},
		"no label":      {true, `{"topic":"t1","message":"m","actions":[{"action":"http","url":"URL/reply"}]}`, "'label' is required"},
		"view action":   {true, `{"topic":"t1","message":"m","actions":[{"action":"view","label":"x","url":"URL/reply"}]}`, "want http"},
		"foreign url":   {true, `{"topic":"t1","message":"m","actions":[{"action":"http","label":"x","url":"https://evil.example/reply"}]}`, "not a topic on this server"},
		"get with body": {true, `{"topic":"t1","message":"m","actions":[{"action":"http","label":"x","url":"URL/reply","method":"GET","body":"b"}]}`, "cannot be set"},
		"credential":    {true, `{"topic":"t1","message":"m","actions":[{"action":"http","label":"x","url":"URL/reply","headers":{"Authorization":"Bearer x"}}]}`, "Authorization"},
		"bad sequence":  {true, `{"topic":"t1","message":"m","sequence_id":"nosuchmsg"}`, "sequence_id names no earlier message"},
		"bad topic":     {true, `{"topic":"a/b","message":"m"}`, "invalid topic"},
	} {
		t.Run(name, func(t *testing.T) {
			s := New()
			defer s.Close()
			code := post(t, s, tc.auth, strings.ReplaceAll(tc.body, "URL", s.URL))
			v := strings.Join(s.Violations(), "; ")
			if code/100 == 2 || !strings.Contains(v, tc.want) {
				t.Fatalf("status %d, violations %q, want %q", code, v, tc.want)
			}
		})
	}
	s := New()
	defer s.Close()
	if code := post(t, s, true, `{"topic":"t1","message":"ok\nID: abcdefghijklmnopqrstuvwxyz","actions":`+strings.ReplaceAll(act(3), "URL", s.URL)+`}`); code != 200 {
		t.Fatalf("valid publish: %d %q", code, s.Violations())
	}
	if m, ok := s.Card("abcdefghijklmnopqrstuvwxyz"); !ok || len(m.Actions) != 3 || m.Actions[0].ID == "" {
		t.Fatalf("stored: %+v", m)
	}
}

func TestSubscribeSinceAndDrop(t *testing.T) {
	s := New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Publish(ctx, "r1", "one")
	s.Publish(ctx, "r1", "two")
	first := s.Messages("r1")[0].ID

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/r1/json?since="+first, nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var events []string
	for len(events) < 3 && sc.Scan() {
		var m Message
		json.Unmarshal(sc.Bytes(), &m)
		events = append(events, m.Event+":"+m.Message)
	}
	if strings.Join(events, ",") != "open:,keepalive:,message:two" {
		t.Fatalf("events = %v", events)
	}
	s.Drop()
	for sc.Scan() {
	}
	// The stream ended; an anonymous subscriber is refused.
	resp2, err := http.Get(s.URL + "/r1/json")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous subscribe: %d", resp2.StatusCode)
	}
}
