package mcp

import (
	"fmt"
	"mime"
	"strings"
)

// ContentType checks the Content-Type header values of an MCP message
// (a request body, or a server's answer) and returns the media type to
// forward in its place (lower case, without parameters; "" when there was
// no header). clawd reads every body as UTF-8: a body labelled with any
// other charset could be decoded by the other side (body-parser,
// raw-body, httpx) into text clawd never saw, so it is refused. So is a
// header that does not parse exactly (Go's mime and npm's content-type
// disagree on duplicate parameters and stray spaces) or comes more than
// once (which one a server reads is its choice).
func ContentType(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", fmt.Errorf("the message has %d Content-Type headers; send exactly one", len(values))
	}
	v := values[0]
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "", fmt.Errorf("its Content-Type %q does not parse exactly (%v); send application/json", cut(v), err)
	}
	for k, p := range params {
		if k != "charset" {
			continue
		}
		if !strings.EqualFold(p, "utf-8") {
			return "", fmt.Errorf("its Content-Type names charset %q: clawd reads MCP messages as UTF-8 only, and the other side could decode this one into other text; send UTF-8 (application/json, no charset)", cut(p))
		}
	}
	return strings.ToLower(mt), nil
}

func cut(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
