package fake

import (
	"regexp"
	"strings"
)

var (
	mentionRE = regexp.MustCompile(`(^|[^\w])@\w`)
	urlRE     = regexp.MustCompile(`(?i)(https?://|www\.|mailto:|[a-z0-9-]+\.(com|net|org|io|app|dev)\b)`)
	issueRE   = regexp.MustCompile(`\b[A-Z][A-Z0-9]{0,9}-[0-9]+\b`)
)

// Render reads Linear markdown roughly as Linear shows it: fenced code
// blocks (their contents returned in blocks), inline code spans (shown
// verbatim), backslash escapes and ** emphasis resolved. Hazards lists what
// in the markdown Linear would turn into something live outside code: an
// @mention, a link or bare URL, an issue reference, raw HTML, a line that
// starts with a clawd command.
func Render(md string) (text string, blocks []string, hazards []string) {
	var out []string
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		ln := lines[i]
		if f := fenceOf(ln); f != "" {
			var blk []string
			j := i + 1
			for ; j < len(lines); j++ {
				if t := strings.TrimSpace(lines[j]); strings.HasPrefix(t, f) && strings.Trim(t, "`") == "" {
					break
				}
				blk = append(blk, lines[j])
			}
			blocks = append(blocks, strings.Join(blk, "\n"))
			out = append(out, blk...)
			i = j
			continue
		}
		t, plain := inline(ln)
		out = append(out, t)
		for _, p := range plain {
			if mentionRE.MatchString(p) {
				hazards = append(hazards, "mention: "+p)
			}
			if urlRE.MatchString(p) {
				hazards = append(hazards, "link: "+p)
			}
			if issueRE.MatchString(p) {
				hazards = append(hazards, "issue reference: "+p)
			}
			if strings.Contains(p, "<") {
				hazards = append(hazards, "html: "+p)
			}
			if strings.Contains(p, "](") {
				hazards = append(hazards, "markdown link: "+p)
			}
		}
		if strings.HasPrefix(strings.TrimSpace(t), "/clawd") {
			hazards = append(hazards, "command line: "+ln)
		}
	}
	return strings.Join(out, "\n"), blocks, hazards
}

// fenceOf is the backtick fence a line opens ("" = none).
func fenceOf(ln string) string {
	t := strings.TrimSpace(ln)
	n := 0
	for n < len(t) && t[n] == '`' {
		n++
	}
	if n < 3 || strings.Contains(t[n:], "`") {
		return ""
	}
	return t[:n]
}

// inline resolves code spans, escapes and ** on one line; plain are the
// pieces outside code spans, after unescaping (where live syntax could be).
func inline(ln string) (string, []string) {
	var b, cur strings.Builder
	var plain []string
	flush := func() {
		if cur.Len() > 0 {
			plain = append(plain, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(ln); {
		c := ln[i]
		switch {
		case c == '\\' && i+1 < len(ln) && isPunct(ln[i+1]):
			b.WriteByte(ln[i+1])
			cur.WriteString("\x00") // an escaped character is inert
			i += 2
		case c == '`':
			n := 0
			for i+n < len(ln) && ln[i+n] == '`' {
				n++
			}
			d := ln[i : i+n]
			end := findRun(ln, i+n, n)
			if end < 0 {
				b.WriteString(d)
				cur.WriteString(d)
				i += n
				continue
			}
			flush()
			content := ln[i+n : end]
			if len(content) >= 2 && content[0] == ' ' && content[len(content)-1] == ' ' && strings.Trim(content, " ") != "" {
				content = content[1 : len(content)-1]
			}
			b.WriteString(content)
			i = end + n
		case c == '*' && i+1 < len(ln) && ln[i+1] == '*':
			i += 2
		default:
			b.WriteByte(c)
			cur.WriteByte(c)
			i++
		}
	}
	flush()
	return b.String(), plain
}

// findRun finds a backtick run of exactly n starting at or after from.
func findRun(s string, from, n int) int {
	for i := from; i < len(s); {
		if s[i] != '`' {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] == '`' {
			j++
		}
		if j-i == n {
			return i
		}
		i = j
	}
	return -1
}

func isPunct(c byte) bool {
	return c > ' ' && c < 0x7f && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
}
