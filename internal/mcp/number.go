package mcp

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Numbers: MCP servers are mostly JavaScript (the TypeScript SDK) or read
// JSON like it: JSON.parse turns every number into the nearest float64.
// clawd decides on that same float64, and refuses a number whose decimal
// text is not exactly the value the server will see (1e400 is Infinity,
// 0.30000000000000001 is 0.3, 9007199254740993 is 9007199254740992,
// 100.0000000000000001 is 100): a matcher would otherwise judge one value
// and the server act on another. Every number a JavaScript or Python
// client writes (the shortest text of a float64) passes.

// Float is the float64 a JSON.parse reading of the number text n gives,
// and an error when that float64 is not exactly the number written (or is
// infinite). n must be a JSON number's text.
func Float(n string) (float64, error) {
	if len(n) > MaxNumberLen {
		return 0, fmt.Errorf("a number longer than %d characters", MaxNumberLen)
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("number %s is beyond float64: the server (JSON.parse) would read Infinity", truncate(n))
	}
	a, ok1 := canonDecimal(n)
	b, ok2 := canonDecimal(strconv.FormatFloat(f, 'e', -1, 64))
	if !ok1 || !ok2 || a != b {
		return 0, fmt.Errorf("number %s is not exactly a float64: the server (JSON.parse) would read %s", truncate(n), jsString(f))
	}
	return f, nil
}

// canonDecimal writes the decimal value of a JSON number text as
// "[-]digits e exponent" with no leading or trailing zeros in digits ("0"
// for zero, whose sign is dropped: -0 and 0 compare equal in JavaScript
// too). Two texts denote the same real number exactly when their
// canonical forms are equal. It never allocates more than the text.
func canonDecimal(s string) (string, bool) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, exps, hasExp := strings.Cut(strings.ToLower(s), "e")
	exp := int64(0)
	if hasExp {
		e := strings.TrimPrefix(exps, "+")
		sign := int64(1)
		if strings.HasPrefix(e, "-") {
			sign, e = -1, e[1:]
		}
		e = strings.TrimLeft(e, "0")
		if len(e) > 9 {
			// Beyond any float64 exponent: only a zero mantissa is a
			// float64 here (and ParseFloat already refused infinities).
			if strings.Trim(mant, "0.") == "" {
				return "0", true
			}
			return "", false
		}
		if e != "" {
			v, err := strconv.ParseInt(e, 10, 64)
			if err != nil {
				return "", false
			}
			exp = sign * v
		}
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := intPart + frac
	exp -= int64(len(frac))
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	digits = strings.TrimLeft(digits, "0")
	if digits == "" {
		return "0", true
	}
	t := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(t))
	out := t + "e" + strconv.FormatInt(exp, 10)
	if neg {
		out = "-" + out
	}
	return out, true
}

// jsString writes f as JavaScript's String(f) does (near enough for
// messages): plain digits from 1e-7 to 1e21, else an exponent.
func jsString(f float64) string {
	if a := math.Abs(f); a == 0 || (a >= 1e-7 && a < 1e21) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
