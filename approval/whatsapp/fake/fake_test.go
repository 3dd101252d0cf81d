package fake

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// The fake refuses what the Cloud API refuses; otherwise the channel's
// tests would prove nothing.
func TestFakeChecks(t *testing.T) {
	post := func(s *Server, token, body string) int {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/"+APIVersion+"/"+PhoneNumberID+"/messages", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	long := strings.Repeat("x", MaxBody+1)
	btn := `{"type":"reply","reply":{"id":"a:abc:0123456789abcdef","title":"Approve"}}`
	for name, c := range map[string]struct {
		token, body, violation string
		window                 bool
	}{
		"no token":         {"", `{}`, "bearer", false},
		"body too long":    {AccessToken, `{"messaging_product":"whatsapp","to":"15551230001","type":"interactive","interactive":{"type":"button","body":{"text":"` + long + `"},"action":{"buttons":[` + btn + `]}}}`, "body.text of 1025", true},
		"four buttons":     {AccessToken, `{"messaging_product":"whatsapp","to":"15551230001","type":"interactive","interactive":{"type":"button","body":{"text":"x"},"action":{"buttons":[` + strings.Repeat(btn+",", 3) + btn + `]}}}`, "1-3 required", true},
		"long title":       {AccessToken, `{"messaging_product":"whatsapp","to":"15551230001","type":"interactive","interactive":{"type":"button","body":{"text":"x"},"action":{"buttons":[{"type":"reply","reply":{"id":"x","title":"Approve for fifteen minutes"}}]}}}`, "over 20", true},
		"newline in param": {AccessToken, `{"messaging_product":"whatsapp","to":"15551230001","type":"template","template":{"name":"` + TemplateName + `","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"a\nb"},{"type":"text","text":"c"},{"type":"text","text":"d"}]}]}}`, "132018", false},
		"numeric index":    {AccessToken, `{"messaging_product":"whatsapp","to":"15551230001","type":"template","template":{"name":"` + TemplateName + `","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"a"},{"type":"text","text":"c"},{"type":"text","text":"d"}]},{"type":"button","sub_type":"quick_reply","index":0,"parameters":[{"type":"payload","payload":"p"}]}]}}`, "index must be a string", false},
		"unknown field":    {AccessToken, `{"messaging_product":"whatsapp","to":"15551230001","type":"text","text":{"body":"x"},"extra":1}`, "unknown field", true},
	} {
		t.Run(name, func(t *testing.T) {
			s := New()
			defer s.Close()
			if c.window {
				s.SetWindow("15551230001", true)
			}
			if st := post(s, c.token, c.body); st == http.StatusOK {
				t.Errorf("accepted")
			}
			if v := s.Violations(); len(v) == 0 || !strings.Contains(strings.Join(v, "\n"), c.violation) {
				t.Errorf("violations %q, want %q", v, c.violation)
			}
		})
	}

	// Free text outside the window: refused with 131047, not a violation.
	s := New()
	defer s.Close()
	text := `{"messaging_product":"whatsapp","to":"15551230001","type":"text","text":{"body":"hi"}}`
	if st := post(s, AccessToken, text); st != http.StatusBadRequest || len(s.Violations()) != 0 || len(s.Messages()) != 0 {
		t.Errorf("outside the window: HTTP %d, %q", st, s.Violations())
	}
	s.SetWindow("15551230001", true)
	if st := post(s, AccessToken, text); st != http.StatusOK || len(s.Messages()) != 1 {
		t.Errorf("inside the window: HTTP %d", st)
	}
}
