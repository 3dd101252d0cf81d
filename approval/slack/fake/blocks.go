package fake

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Block Kit limits as documented at
// https://docs.slack.dev/reference/block-kit/blocks (characters).
const (
	maxBlocks      = 50
	maxText        = 40000
	maxSectionText = 3000
	maxField       = 2000
	maxFields      = 10
	maxHeaderText  = 150
	maxContextEls  = 10
	maxActionEls   = 25
	maxButtonText  = 75
	maxButtonValue = 2000
	maxActionID    = 255
	maxBlockID     = 255
	maxURL         = 3000
)

// checkMessage validates a message's text and blocks and returns the
// blocks decoded; ok is false when Slack would refuse the message.
func (s *Server) checkMessage(where, text string, raw json.RawMessage) (blocks []map[string]any, ok bool) {
	var v []string
	bad := func(f string, a ...any) { v = append(v, where+": "+fmt.Sprintf(f, a...)) }
	defer func() {
		if len(v) > 0 {
			s.mu.Lock()
			s.violations = append(s.violations, v...)
			s.mu.Unlock()
		}
	}()
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &blocks); err != nil {
			bad("blocks are not a JSON array of objects: %v", err)
			return nil, false
		}
	}
	if text == "" && len(blocks) == 0 {
		bad("neither text nor blocks")
		return nil, false
	}
	if text == "" {
		bad("no text fallback (notifications and screen readers need it)")
	}
	if n := utf8.RuneCountInString(text); n > maxText {
		bad("text of %d characters > %d", n, maxText)
	}
	if len(blocks) > maxBlocks {
		bad("%d blocks > %d", len(blocks), maxBlocks)
	}
	ids := map[string]bool{}
	actionIDs := map[string]bool{}
	for i, b := range blocks {
		at := fmt.Sprintf("block %d", i)
		if id, ok := b["block_id"]; ok {
			sid, isStr := id.(string)
			switch {
			case !isStr || sid == "":
				bad("%s: block_id not a non-empty string", at)
			case len(sid) > maxBlockID:
				bad("%s: block_id of %d characters > %d", at, len(sid), maxBlockID)
			case ids[sid]:
				bad("%s: duplicate block_id %q", at, sid)
			}
			ids[sid] = true
		}
		typ, _ := b["type"].(string)
		switch typ {
		case "section":
			t, hasText := b["text"]
			f, hasFields := b["fields"].([]any)
			if !hasText && !hasFields {
				bad("%s: section without text or fields", at)
			}
			if hasText {
				checkTextObj(bad, at+" text", t, "", maxSectionText)
			}
			if len(f) > maxFields {
				bad("%s: %d fields > %d", at, len(f), maxFields)
			}
			for j, x := range f {
				checkTextObj(bad, fmt.Sprintf("%s field %d", at, j), x, "", maxField)
			}
		case "header":
			checkTextObj(bad, at+" text", b["text"], "plain_text", maxHeaderText)
		case "context":
			els, _ := b["elements"].([]any)
			if len(els) == 0 || len(els) > maxContextEls {
				bad("%s: context with %d elements (1..%d)", at, len(els), maxContextEls)
			}
			for j, x := range els {
				m, _ := x.(map[string]any)
				if m["type"] == "image" {
					continue
				}
				checkTextObj(bad, fmt.Sprintf("%s element %d", at, j), x, "", maxSectionText)
			}
		case "actions":
			els, _ := b["elements"].([]any)
			if len(els) == 0 || len(els) > maxActionEls {
				bad("%s: actions with %d elements (1..%d)", at, len(els), maxActionEls)
			}
			for j, x := range els {
				checkButton(bad, fmt.Sprintf("%s element %d", at, j), x, actionIDs)
			}
		case "divider":
		default:
			bad("%s: unexpected block type %q", at, typ)
		}
	}
	return blocks, true
}

func checkTextObj(bad func(string, ...any), at string, v any, want string, max int) {
	m, ok := v.(map[string]any)
	if !ok {
		bad("%s: not a text object", at)
		return
	}
	typ, _ := m["type"].(string)
	if typ != "plain_text" && typ != "mrkdwn" {
		bad("%s: text type %q", at, typ)
	}
	if want != "" && typ != want {
		bad("%s: must be %s, is %q", at, want, typ)
	}
	if _, ok := m["emoji"]; ok && typ != "plain_text" {
		bad("%s: emoji is only for plain_text", at)
	}
	if _, ok := m["verbatim"]; ok && typ != "mrkdwn" {
		bad("%s: verbatim is only for mrkdwn", at)
	}
	t, _ := m["text"].(string)
	n := utf8.RuneCountInString(t)
	if n == 0 {
		bad("%s: empty text", at)
	}
	if n > max {
		bad("%s: %d characters > %d", at, n, max)
	}
	if !utf8.ValidString(t) {
		bad("%s: invalid UTF-8", at)
	}
}

func checkButton(bad func(string, ...any), at string, v any, actionIDs map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok || m["type"] != "button" {
		bad("%s: not a button", at)
		return
	}
	checkTextObj(bad, at+" text", m["text"], "plain_text", maxButtonText)
	id, _ := m["action_id"].(string)
	switch {
	case id == "":
		bad("%s: no action_id", at)
	case len(id) > maxActionID:
		bad("%s: action_id of %d characters > %d", at, len(id), maxActionID)
	case actionIDs[id]:
		bad("%s: duplicate action_id %q", at, id)
	}
	actionIDs[id] = true
	if val, ok := m["value"].(string); ok && utf8.RuneCountInString(val) > maxButtonValue {
		bad("%s: value of %d characters > %d", at, len(val), maxButtonValue)
	}
	if st, ok := m["style"]; ok && st != "primary" && st != "danger" {
		bad("%s: style %v", at, st)
	}
	if u, ok := m["url"].(string); ok && len(u) > maxURL {
		bad("%s: url too long", at)
	}
}

// buttons lists the buttons of the blocks.
func buttons(blocks []map[string]any) []Button {
	var out []Button
	for _, b := range blocks {
		if b["type"] != "actions" {
			continue
		}
		bid, _ := b["block_id"].(string)
		els, _ := b["elements"].([]any)
		for _, x := range els {
			m, _ := x.(map[string]any)
			if m["type"] != "button" {
				continue
			}
			btn := Button{BlockID: bid}
			btn.ActionID, _ = m["action_id"].(string)
			btn.Value, _ = m["value"].(string)
			btn.Style, _ = m["style"].(string)
			if t, ok := m["text"].(map[string]any); ok {
				btn.Text, _ = t["text"].(string)
			}
			out = append(out, btn)
		}
	}
	return out
}
