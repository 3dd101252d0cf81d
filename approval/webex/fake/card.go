package fake

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var (
	buttonValue = regexp.MustCompile(`^[a-z0-9:]{1,45}$`)
	footerID    = regexp.MustCompile(`clawd ([a-z2-7]{26})\b`)
)

// checkCard checks an Adaptive Card against what Webex renders (version
// 1.3 at most, Action.Submit/OpenUrl/ShowCard only, five actions) and the
// shape of clawd cards (summary first), and reads it into m.
func (s *Server) checkCard(card map[string]any, m *Message) bool {
	bad := func(f string, a ...any) bool {
		s.violate("card: "+f, a...)
		return false
	}
	if card["type"] != "AdaptiveCard" {
		return bad("type %v", card["type"])
	}
	v, _ := card["version"].(string)
	major, minor, ok := strings.Cut(v, ".")
	mi, err := strconv.Atoi(minor)
	if !ok || major != "1" || err != nil || mi > 3 {
		return bad("version %q: Webex renders Adaptive Cards up to 1.3", v)
	}
	body, _ := card["body"].([]any)
	if len(body) == 0 {
		return bad("empty body")
	}
	var text []string
	for i, e := range body {
		el, _ := e.(map[string]any)
		switch el["type"] {
		case "TextBlock":
			t, _ := el["text"].(string)
			if t == "" {
				return bad("body[%d]: TextBlock without text", i)
			}
			if i == 0 && el["wrap"] != true {
				return bad("body[0]: the summary must wrap")
			}
			text = append(text, t)
		case "FactSet":
			if i == 0 {
				return bad("body[0] is a FactSet; the summary comes first")
			}
			facts, _ := el["facts"].([]any)
			if len(facts) == 0 {
				return bad("body[%d]: FactSet without facts", i)
			}
			for j, f := range facts {
				fm, _ := f.(map[string]any)
				t, ok1 := fm["title"].(string)
				val, ok2 := fm["value"].(string)
				if !ok1 || !ok2 || t == "" {
					return bad("body[%d].facts[%d]: title and value are required strings", i, j)
				}
				text = append(text, t+": "+val)
			}
		default:
			return bad("body[%d]: element type %v is not used by clawd cards", i, el["type"])
		}
	}
	m.Text = strings.Join(text, "\n")
	m.Card = card
	if v, ok := card["actions"]; ok {
		acts, _ := v.([]any)
		if len(acts) == 0 || len(acts) > MaxActions {
			return bad("%d actions (Webex shows 1 to %d)", len(acts), MaxActions)
		}
		for i, a := range acts {
			am, _ := a.(map[string]any)
			act := Action{}
			act.Type, _ = am["type"].(string)
			act.Title, _ = am["title"].(string)
			act.Style, _ = am["style"].(string)
			data, _ := am["data"].(map[string]any)
			act.Value, _ = data["v"].(string)
			switch {
			case act.Type != "Action.Submit":
				return bad("actions[%d]: %q; Webex supports Action.Submit (not Action.Execute) and clawd uses only that", i, act.Type)
			case act.Title == "" || len(act.Title) > 100:
				return bad("actions[%d]: title", i)
			case act.Style != "" && act.Style != "default" && act.Style != "positive" && act.Style != "destructive":
				return bad("actions[%d]: style %q", i, act.Style)
			case !buttonValue.MatchString(act.Value):
				return bad("actions[%d]: data.v %q is not a clawd button value", i, act.Value)
			}
			if p := strings.Split(act.Value, ":"); len(p) == 3 {
				m.ApprovalID = p[1]
			}
			m.Actions = append(m.Actions, act)
		}
	}
	if m.ApprovalID == "" {
		if f := footerID.FindStringSubmatch(m.Text); f != nil {
			m.ApprovalID = f[1]
		}
	}
	return true
}

func fmtErr(f string, a ...any) error { return fmt.Errorf("fake webex: "+f, a...) }
