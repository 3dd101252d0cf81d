package fake

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	buttonValue = regexp.MustCompile(`^[a-z0-9:]{1,45}$`)
	atTag       = regexp.MustCompile(`^<at>[^<>]{1,100}</at>$`)
)

// checkCardActivity checks a message activity carrying one Adaptive Card
// and reads it into a Message.
func (s *Server) checkCardActivity(what string, act map[string]any) (*Message, bool) {
	if act["type"] != "message" {
		s.violate("%s: activity type %v, want message", what, act["type"])
		return nil, false
	}
	atts, _ := act["attachments"].([]any)
	if len(atts) != 1 {
		s.violate("%s: %d attachments, want one card", what, len(atts))
		return nil, false
	}
	att, _ := atts[0].(map[string]any)
	if att["contentType"] != "application/vnd.microsoft.card.adaptive" {
		s.violate("%s: attachment contentType %v", what, att["contentType"])
		return nil, false
	}
	card, ok := att["content"].(map[string]any)
	if !ok {
		s.violate("%s: attachment content is not an object", what)
		return nil, false
	}
	return s.checkCard(what, card)
}

// checkCard checks an Adaptive Card against the schema essentials Teams
// enforces (version, element types, required fields, actions, mentions).
func (s *Server) checkCard(what string, card map[string]any) (*Message, bool) {
	bad := func(f string, a ...any) (*Message, bool) {
		s.violate(what+": card: "+f, a...)
		return nil, false
	}
	if card["type"] != "AdaptiveCard" {
		return bad("type %v", card["type"])
	}
	if v := card["version"]; v != "1.4" && v != "1.5" {
		return bad("version %v: Action.Execute needs 1.4 or later and Teams renders up to 1.5", v)
	}
	body, _ := card["body"].([]any)
	if len(body) == 0 {
		return bad("empty body")
	}
	m := &Message{Card: card}
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
				return bad("body[0]: the first TextBlock (the summary) must wrap")
			}
			text = append(text, t)
		case "FactSet":
			facts, _ := el["facts"].([]any)
			if len(facts) == 0 {
				return bad("body[%d]: FactSet without facts", i)
			}
			for j, f := range facts {
				fm, _ := f.(map[string]any)
				t, ok1 := fm["title"].(string)
				v, ok2 := fm["value"].(string)
				if !ok1 || !ok2 || t == "" {
					return bad("body[%d].facts[%d]: title and value are required strings", i, j)
				}
				text = append(text, t+": "+v)
			}
		default:
			return bad("body[%d]: element type %v is not used by clawd cards", i, el["type"])
		}
		if i == 0 && el["type"] != "TextBlock" {
			return bad("body[0] is %v; the summary comes first", el["type"])
		}
	}
	m.Text = strings.Join(text, "\n")
	if v, ok := card["actions"]; ok {
		acts, _ := v.([]any)
		if len(acts) == 0 || len(acts) > 6 {
			return bad("%d actions (Teams shows 1 to 6)", len(acts))
		}
		for i, a := range acts {
			am, _ := a.(map[string]any)
			act, ok := checkAction(am)
			if !ok {
				return bad("actions[%d]: %v", i, am)
			}
			if fb, ok := am["fallback"].(map[string]any); ok {
				f, ok := checkAction(fb)
				if !ok || f.Type != "Action.Submit" || f.Value != act.Value {
					return bad("actions[%d]: fallback must be an Action.Submit with the same data", i)
				}
				act.Fallback = f.Type
			}
			m.Actions = append(m.Actions, act)
		}
	}
	if ms, ok := card["msteams"].(map[string]any); ok {
		ents, _ := ms["entities"].([]any)
		for i, e := range ents {
			em, _ := e.(map[string]any)
			t, _ := em["text"].(string)
			who, _ := em["mentioned"].(map[string]any)
			id, _ := who["id"].(string)
			name, _ := who["name"].(string)
			if em["type"] != "mention" || !atTag.MatchString(t) || id == "" || name == "" {
				return bad("msteams.entities[%d]: a mention needs type, <at>text</at> and mentioned id and name", i)
			}
			if !strings.Contains(m.Text, t) {
				return bad("msteams.entities[%d]: %s does not appear in any TextBlock", i, t)
			}
			m.Mentions = append(m.Mentions, id)
		}
	}
	return m, true
}

func checkAction(a map[string]any) (Action, bool) {
	var act Action
	act.Type, _ = a["type"].(string)
	act.Title, _ = a["title"].(string)
	act.Style, _ = a["style"].(string)
	if act.Title == "" || len(act.Title) > 100 {
		return act, false
	}
	switch act.Style {
	case "", "default", "positive", "destructive":
	default:
		return act, false
	}
	data, _ := a["data"].(map[string]any)
	act.Value, _ = data["v"].(string)
	if !buttonValue.MatchString(act.Value) {
		return act, false
	}
	switch act.Type {
	case "Action.Execute":
		act.Verb, _ = a["verb"].(string)
		return act, act.Verb != ""
	case "Action.Submit":
		return act, true
	}
	return act, false
}

// unescape is what a reader sees of Adaptive Card markdown escapes.
func unescape(s string) string {
	var b strings.Builder
	esc := false
	for _, r := range s {
		if r == '\\' && !esc {
			esc = true
			continue
		}
		esc = false
		b.WriteRune(r)
	}
	return b.String()
}

// resultText is the text a clicker sees first on a refreshed card.
func resultText(card map[string]any) string {
	body, _ := card["body"].([]any)
	for _, e := range body {
		el, _ := e.(map[string]any)
		if el["id"] == "clawd-result" {
			t, _ := el["text"].(string)
			return unescape(t)
		}
	}
	return ""
}

func fmtErr(f string, a ...any) error { return fmt.Errorf("fake teams: "+f, a...) }
