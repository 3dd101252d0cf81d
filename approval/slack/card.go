package slack

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/clawd-dev/clawd/approval"
)

// Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks).
// Lengths are counted in bytes here, which is never less than Slack's
// character count, so a card that fits here fits there.
const (
	MaxBlocks      = 50
	MaxSectionText = 3000
	MaxHeaderText  = 150
	MaxButtonText  = 75
	MaxButtonValue = 2000
	MaxActionID    = 255
	MaxBlockID     = 255
	MaxFallback    = 4000 // text is allowed 40 000; a fallback needs far less
)

// ActionPrefix starts every action_id and block_id on a clawd card.
const ActionPrefix = "clawd_"

// escape makes agent-controlled text inert in mrkdwn: no <!channel>, no
// <@U…> mentions, no links.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// fit escapes s with esc and cuts the result to at most max bytes, never
// inside an entity or a UTF-8 sequence; cut reports whether it had to cut.
// The marker "…" is counted within max.
func fit(s string, max int, esc func(string) string) (out string, cut bool) {
	full := esc(s)
	if len(full) <= max {
		return full, false
	}
	const more = "…"
	var b strings.Builder
	for _, r := range s {
		e := esc(string(r))
		if b.Len()+len(e)+len(more) > max {
			break
		}
		b.WriteString(e)
	}
	return b.String() + more, true
}

// plain cuts s to max bytes for a plain_text object (no escaping needed).
func plain(s string, max int) string {
	out, _ := fit(s, max, func(s string) string { return s })
	return out
}

// code makes s safe inside a ``` block.
func code(s string) string { return escape(strings.ReplaceAll(s, "```", "'''")) }

// inline makes s safe inside `…`.
func inline(s string) string { return escape(strings.ReplaceAll(s, "`", "'")) }

func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, true)
}

func section(id, text string) *slack.SectionBlock {
	return slack.NewSectionBlock(mrkdwn(text), nil, nil, slack.SectionBlockOptionBlockID(id))
}

var statusText = map[string]string{
	approval.Approved:  ":white_check_mark: Approved",
	approval.Denied:    ":no_entry: Denied",
	approval.TimedOut:  ":hourglass: Timed out (denied)",
	approval.Cancelled: ":heavy_multiplication_x: Cancelled (the agent disconnected)",
	approval.Expired:   ":arrows_counterclockwise: Expired (clawd restarted)",
}

var slackUserID = regexp.MustCompile(`^[UW][A-Z0-9]{2,20}$`)

// blockID is the block_id of part of a card: "clawd_ID" for the first
// block (the fake and humans find the approval by it), "clawd_ID_part" for
// the rest.
func blockID(id, part string) string {
	if part == "" {
		return ActionPrefix + id
	}
	return ActionPrefix + id + "_" + part
}

// Message is the card for c: its text fallback and its blocks. Pending cards
// carry the buttons; decided ones the outcome instead.
func Message(c *approval.Card) (fallback string, blocks []slack.Block) {
	a := c.Approval
	id := a.ID

	// Summary first: a header (plain text, so nothing in it is a mention),
	// and the whole summary below when the header had to cut it.
	// One line: the core strips control characters, and the card never
	// lets a summary draw lines of its own either.
	summary := strings.Join(strings.Fields(a.Summary), " ")
	if summary == "" {
		summary = a.Method + " " + a.Host
	}
	head := plain(summary, MaxHeaderText)
	blocks = append(blocks, slack.NewHeaderBlock(
		slack.NewTextBlockObject(slack.PlainTextType, head, false, false),
		slack.HeaderBlockOptionBlockID(blockID(id, ""))))
	if head != summary {
		s, _ := fit(summary, MaxSectionText, escape)
		blocks = append(blocks, section(blockID(id, "summary"), s))
	}

	// Method and URL.
	method := "`" + short(a.Method, 32, inline) + "` "
	u, _ := fit(a.URL, MaxSectionText-len(method), escape)
	blocks = append(blocks, section(blockID(id, "request"), method+u))

	// Container, rule, time left.
	ctx := "Container *" + short(a.Container.Name, 200, escape) + "*"
	if a.Container.Runtime != "" {
		ctx += " (" + short(a.Container.Runtime, 50, escape) + ")"
	}
	if a.Rule != "" {
		ctx += " · rule `" + short(a.Rule, 200, inline) + "`"
	}
	if a.Status == approval.Pending && !a.Expires.IsZero() {
		left := a.Expires.Sub(c.Now).Round(time.Second)
		ctx += " · expires in " + max(left, 0).String()
	}
	blocks = append(blocks, slack.NewContextBlock(blockID(id, "context"), mrkdwn(ctx)))

	// Body preview as a code block, cut to one section.
	if a.Body != "" {
		note := ""
		if a.BodyTruncated {
			note = "\n… (preview"
			if a.BodySize >= 0 {
				note += " of " + strconv.FormatInt(a.BodySize, 10) + " bytes"
			}
			note += ")"
		}
		const fences = len("```") * 2
		body, cut := fit(a.Body, MaxSectionText-fences-len(note)-len("\n… (cut to fit Slack)"), code)
		if cut {
			note += "\n… (cut to fit Slack)"
		}
		blocks = append(blocks, section(blockID(id, "body"), "```"+body+note+"```"))
	}

	// Who is asked.
	var mentions []string
	for _, p := range c.People {
		if slackUserID.MatchString(p) {
			mentions = append(mentions, "<@"+p+">")
		}
		if len(mentions) == 20 {
			break
		}
	}
	if len(mentions) > 0 && a.Status == approval.Pending {
		blocks = append(blocks, section(blockID(id, "people"), "Asked: "+strings.Join(mentions, " ")))
	}

	// Votes toward a two-person rule.
	if a.Required > 1 && a.Status == approval.Pending {
		blocks = append(blocks, section(blockID(id, "votes"), votes(a)))
	}

	if btns := c.Buttons(); len(btns) > 0 {
		var els []slack.BlockElement
		for _, b := range btns {
			e := slack.NewButtonBlockElement(ActionPrefix+b.Act, b.Value,
				slack.NewTextBlockObject(slack.PlainTextType, plain(b.Label, MaxButtonText), false, false))
			if b.Style != "" {
				e = e.WithStyle(slack.Style(b.Style))
			}
			els = append(els, e)
		}
		blocks = append(blocks, slack.NewActionBlock(blockID(id, "actions"), els...))
	} else {
		blocks = append(blocks, section(blockID(id, "outcome"), outcome(a)))
	}

	lead := "Approval needed"
	if a.Status != approval.Pending {
		lead = statusWord[a.Status]
		if lead == "" {
			lead = a.Status
		}
	}
	fallback, _ = fit(lead+": "+summary, MaxFallback, escape)
	return fallback, blocks
}

var statusWord = map[string]string{
	approval.Approved:  "Approved",
	approval.Denied:    "Denied",
	approval.TimedOut:  "Timed out",
	approval.Cancelled: "Cancelled",
	approval.Expired:   "Expired",
}

// short is s escaped with esc and cut to max bytes.
func short(s string, max int, esc func(string) string) string {
	out, _ := fit(s, max, esc)
	return out
}

// votes is "1 of 2 approvals: alice" (at most ten names).
func votes(a *approval.Approval) string {
	var who []string
	for i, v := range a.Votes {
		if i == 10 {
			who = append(who, "…")
			break
		}
		n := v.Label()
		who = append(who, short(n, 80, escape))
	}
	line := fmt.Sprintf("%d of %d approvals", len(a.Votes), max(a.Required, len(a.Votes)))
	if len(who) > 0 {
		line += ": " + strings.Join(who, ", ")
	}
	return line
}

// outcome is the line a decided card shows instead of the buttons: the
// status, who decided, why, and the votes when more than one was needed.
func outcome(a *approval.Approval) string {
	out := statusText[a.Status]
	if out == "" {
		out = short(a.Status, 40, escape)
	}
	if a.By != "" {
		out += " by " + short(a.By, 200, escape)
	}
	if a.Reason != "" {
		out += ": " + short(a.Reason, 1000, escape)
	}
	if a.Required > 1 || len(a.Votes) > 1 {
		out += "\n" + votes(a)
	}
	return out
}
