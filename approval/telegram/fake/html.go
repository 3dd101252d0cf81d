package fake

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// allowed are the tags of Telegram's HTML parse mode.
var allowed = map[string]bool{
	"b": true, "strong": true, "i": true, "em": true, "u": true, "ins": true, "s": true, "strike": true, "del": true,
	"span": true, "tg-spoiler": true, "a": true, "code": true, "pre": true, "blockquote": true, "tg-emoji": true,
}

var (
	hrefRE = regexp.MustCompile(`^a\s+href="([^"<>]*)"$`)
	attrRE = regexp.MustCompile(`^(span\s+class="tg-spoiler"|code\s+class="language-[A-Za-z0-9_+-]+"|blockquote\s+expandable|tg-emoji\s+emoji-id="[0-9]+")$`)
)

// parseHTML checks text as Telegram's HTML parse mode does (allowed tags
// only, balanced and nested, known entities, no bare '<') and returns the
// text the chat shows.
func parseHTML(s string) (string, error) {
	var out strings.Builder
	var stack []string
	for i := 0; i < len(s); {
		switch s[i] {
		case '<':
			j := strings.IndexByte(s[i:], '>')
			if j < 0 {
				return "", fmt.Errorf("unclosed start tag at byte offset %d", i)
			}
			tag := s[i+1 : i+j]
			i += j + 1
			if name, isEnd := strings.CutPrefix(tag, "/"); isEnd {
				if len(stack) == 0 || stack[len(stack)-1] != name {
					return "", fmt.Errorf("unmatched end tag </%s>", name)
				}
				stack = stack[:len(stack)-1]
				continue
			}
			name, _, _ := strings.Cut(tag, " ")
			if !allowed[name] {
				return "", fmt.Errorf("unsupported start tag %q", name)
			}
			if name != tag {
				if m := hrefRE.FindStringSubmatch(tag); m == nil && !attrRE.MatchString(tag) {
					return "", fmt.Errorf("unsupported attributes in <%s>", clip(tag))
				}
			} else if name == "a" {
				return "", fmt.Errorf("<a> without href")
			}
			stack = append(stack, name)
		case '&':
			j := strings.IndexByte(s[i:], ';')
			if j < 0 || j > 10 {
				return "", fmt.Errorf("bare '&' at byte offset %d", i)
			}
			ent := s[i+1 : i+j]
			i += j + 1
			switch {
			case ent == "lt":
				out.WriteByte('<')
			case ent == "gt":
				out.WriteByte('>')
			case ent == "amp":
				out.WriteByte('&')
			case ent == "quot":
				out.WriteByte('"')
			case strings.HasPrefix(ent, "#x"):
				n, err := strconv.ParseUint(ent[2:], 16, 32)
				if err != nil {
					return "", fmt.Errorf("bad entity &%s;", ent)
				}
				out.WriteRune(rune(n))
			case strings.HasPrefix(ent, "#"):
				n, err := strconv.ParseUint(ent[1:], 10, 32)
				if err != nil {
					return "", fmt.Errorf("bad entity &%s;", ent)
				}
				out.WriteRune(rune(n))
			default:
				return "", fmt.Errorf("unsupported entity &%s;", clip(ent))
			}
		default:
			out.WriteByte(s[i])
			i++
		}
	}
	if len(stack) > 0 {
		return "", fmt.Errorf("can't find end tag corresponding to start tag <%s>", stack[len(stack)-1])
	}
	return out.String(), nil
}

var tagRE = regexp.MustCompile(`<[^<>]*>`)

func stripTags(s string) string { return tagRE.ReplaceAllString(s, "") }

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
