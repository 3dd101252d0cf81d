package gchat

import (
	"encoding/json"
	"fmt"
	"html"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Chat's limits (Message resource): text up to 4,096 characters, a message
// with its cards up to 32,000 bytes.
const (
	MaxText         = 4096
	MaxMessageBytes = 32000
	maxTitle        = 200 // the header shows about one line; longer is cut
	maxURL          = 1000
	maxBody         = 1500
)

// Message is the Chat message clawd sends (create and update).
type Message struct {
	Text    string       `json:"text"`
	CardsV2 []CardWithID `json:"cardsV2"`
}

// CardWithID is one card of a message.
type CardWithID struct {
	CardID string `json:"cardId"`
	Card   Card   `json:"card"`
}

// Card is a cards v2 card.
type Card struct {
	Header   *Header   `json:"header,omitempty"`
	Sections []Section `json:"sections"`
}

// Header is a card's header.
type Header struct {
	Title    string `json:"title"`
	Subtitle string `json:"subtitle,omitempty"`
}

// Section is a group of widgets.
type Section struct {
	Header                    string   `json:"header,omitempty"`
	Collapsible               bool     `json:"collapsible,omitempty"`
	UncollapsibleWidgetsCount int      `json:"uncollapsibleWidgetsCount,omitempty"`
	Widgets                   []Widget `json:"widgets"`
}

// Widget is one widget; exactly one field is set.
type Widget struct {
	DecoratedText *DecoratedText `json:"decoratedText,omitempty"`
	TextParagraph *TextParagraph `json:"textParagraph,omitempty"`
	ButtonList    *ButtonList    `json:"buttonList,omitempty"`
	Divider       *struct{}      `json:"divider,omitempty"`
}

// DecoratedText is a labelled line of text.
type DecoratedText struct {
	TopLabel string `json:"topLabel,omitempty"`
	Text     string `json:"text"`
	WrapText bool   `json:"wrapText,omitempty"`
}

// TextParagraph is a paragraph of (formatted) text.
type TextParagraph struct {
	Text string `json:"text"`
}

// ButtonList is a row of buttons.
type ButtonList struct {
	Buttons []Button `json:"buttons"`
}

// Button is a card button.
type Button struct {
	Text    string  `json:"text"`
	Type    string  `json:"type,omitempty"` // FILLED, OUTLINED, …
	Color   *Color  `json:"color,omitempty"`
	OnClick OnClick `json:"onClick"`
}

// Color is an RGB color, components 0..1.
type Color struct {
	Red   float64 `json:"red"`
	Green float64 `json:"green"`
	Blue  float64 `json:"blue"`
	Alpha float64 `json:"alpha"`
}

// OnClick is what a button does: an action sent to the app.
type OnClick struct {
	Action *Action `json:"action,omitempty"`
}

// Action invokes Function with parameters.
type Action struct {
	Function   string        `json:"function"`
	Parameters []ActionParam `json:"parameters,omitempty"`
}

// ActionParam is one key/value parameter of an action.
type ActionParam struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// CardID is the cardId of an approval's card.
func CardID(approvalID string) string { return "clawd-" + approvalID }

// message builds the Chat message for card.
func (c *Channel) message(card *approval.Card) Message {
	body := card.Body
	for limit := maxBody; ; limit /= 2 {
		m := Message{Text: messageText(card), CardsV2: []CardWithID{{CardID: CardID(card.ID), Card: buildCard(card, body, limit)}}}
		b, _ := json.Marshal(m)
		if len(b) <= MaxMessageBytes || limit == 0 {
			return m
		}
	}
}

// messageText is the plain text above the card: the mentions and one
// fixed line. Nothing from the request goes here (Chat text has no
// escaping; the card's text is escaped instead).
func messageText(card *approval.Card) string {
	var b strings.Builder
	if card.Status == approval.Pending {
		for _, p := range card.People {
			if userRe.MatchString(p) && b.Len() < MaxText-200 {
				b.WriteString("<" + p + "> ")
			}
		}
		b.WriteString("clawd: approval needed")
	} else {
		b.WriteString("clawd: approval " + statusWord(card.Status))
	}
	return b.String()
}

func statusWord(s string) string {
	switch s {
	case approval.Approved:
		return "approved"
	case approval.Denied:
		return "denied"
	case approval.TimedOut:
		return "timed out"
	case approval.Cancelled:
		return "cancelled"
	case approval.Expired:
		return "expired (clawd restarted)"
	case approval.Pending:
		return "pending"
	}
	return "ended"
}

// esc makes untrusted text safe for card text (which takes Chat's HTML
// subset), cut to n characters first.
func esc(s string, n int) string { return html.EscapeString(cut(s, n)) }

// cut shortens s to at most n characters, marking the cut.
func cut(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 1 {
		return "…"
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func buildCard(card *approval.Card, body string, bodyLimit int) Card {
	title := card.Summary
	if title == "" {
		title = card.Method + " " + card.URL
	}
	hdr := &Header{Title: cut(oneLine(title), maxTitle), Subtitle: "clawd approval · " + statusWord(card.Status)}
	var w []Widget
	text := func(label, value string) {
		w = append(w, Widget{DecoratedText: &DecoratedText{TopLabel: label, Text: value, WrapText: true}})
	}
	text("Request", "<b>"+esc(card.Method, 16)+"</b> "+esc(card.URL, maxURL))
	if card.Container.Name != "" {
		text("Container", esc(card.Container.Name, 200))
	}
	if card.Rule != "" {
		text("Rule", esc(card.Rule, 200))
	}
	if card.Status == approval.Pending {
		text("Time left", timeLeft(card.Expires, card.Now))
	} else {
		out := "<b>" + esc(statusWord(card.Status), 50) + "</b>"
		if card.By != "" {
			out += " by " + esc(card.By, 200)
		}
		if card.Reason != "" {
			out += ": " + esc(card.Reason, 500)
		}
		text("Outcome", out)
	}
	if card.Required > 1 {
		var by []string
		for _, v := range card.Votes {
			n := v.Label()
			by = append(by, cut(n, 100))
		}
		s := fmt.Sprintf("%d of %d approvals", len(card.Votes), card.Required)
		if len(by) > 0 {
			s += ": " + strings.Join(by, ", ")
		}
		text("Approvals", esc(s, 1000))
	}
	d := card.Digest
	if len(d) > 16 {
		d = d[:16]
	}
	text("Approval", esc(card.ID, 64)+" · digest "+esc(d, 16))
	sections := []Section{{Widgets: w}}
	if body != "" && bodyLimit > 0 {
		b := body
		if card.BodyTruncated {
			b += "\n[truncated]"
		}
		sections = append(sections, Section{
			Header: "Body", Collapsible: true, UncollapsibleWidgetsCount: 1,
			Widgets: []Widget{{TextParagraph: &TextParagraph{Text: "<font color=\"#5f6368\">" + esc(b, bodyLimit) + "</font>"}}},
		})
	}
	if bs := card.Buttons(); len(bs) > 0 {
		var list []Button
		for _, b := range bs {
			btn := Button{Text: b.Label, OnClick: OnClick{Action: &Action{Function: Function, Parameters: []ActionParam{{Key: "v", Value: b.Value}}}}}
			switch b.Style {
			case "primary":
				btn.Type = "FILLED"
			case "danger":
				btn.Type = "FILLED"
				btn.Color = &Color{Red: 0.85, Green: 0.19, Blue: 0.15, Alpha: 1}
			default:
				btn.Type = "OUTLINED"
			}
			list = append(list, btn)
		}
		sections = append(sections, Section{Widgets: []Widget{{ButtonList: &ButtonList{Buttons: list}}}})
	}
	return Card{Header: hdr, Sections: sections}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func timeLeft(exp, now time.Time) string {
	if exp.IsZero() {
		return "-"
	}
	d := exp.Sub(now).Round(time.Second)
	if d <= 0 {
		return "expiring"
	}
	return d.String() + " (until " + exp.UTC().Format("15:04:05 MST") + ")"
}
