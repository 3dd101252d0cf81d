package discord

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEscape: escaped text fits its limit and leaves no markdown or
// mention character unescaped; code-block text cannot close the block.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "**x**", "@everyone", "<@123>", "[a](b)", "```", "\\", "a\\*", "日本語`", "\x00\u202e"} {
		f.Add(s, 10)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 2 || max > 5000 {
			return
		}
		e := escape(s, max, true)
		if n := utf8.RuneCountInString(e); n > max {
			t.Fatalf("escape(%q, %d) is %d characters", s, max, n)
		}
		if strings.ContainsAny(e, "\n\r") {
			t.Fatalf("escape(%q) keeps a line break", s)
		}
		rs := []rune(strings.TrimSuffix(e, "…"))
		for i := 0; i < len(rs); i++ {
			if rs[i] == '\\' {
				if i+1 >= len(rs) {
					t.Fatalf("escape(%q) = %q ends in a lone backslash", s, e)
				}
				i++
				continue
			}
			if strings.ContainsRune(mdSpecial, rs[i]) {
				t.Fatalf("escape(%q) = %q leaves %q unescaped", s, e, rs[i])
			}
		}
		c := codeSafe(s, max)
		if n := utf8.RuneCountInString(c); n > max {
			t.Fatalf("codeSafe(%q, %d) is %d characters", s, max, n)
		}
		if strings.Contains(c, "``") {
			t.Fatalf("codeSafe(%q) = %q has adjacent backticks", s, c)
		}
	})
}
