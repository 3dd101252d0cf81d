package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ReadValue reads a secret value for `clawd secret set|rotate` from r
// (stdin: values never go on the command line, where ps and shell history
// would see them). One trailing newline ("\n" or "\r\n") is trimmed, so
// `echo KEY | clawd secret set ...` works.
func ReadValue(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxValueLen+3))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("read secret value: %w", err)
	}
	v := b
	if bytes.HasSuffix(v, []byte("\r\n")) {
		v = v[:len(v)-2]
	} else if bytes.HasSuffix(v, []byte("\n")) {
		v = v[:len(v)-1]
	}
	if len(v) == 0 {
		clear(b)
		return nil, errors.New("read secret value: empty input (pipe the value on stdin)")
	}
	if len(v) > maxValueLen {
		clear(b)
		return nil, fmt.Errorf("read secret value: longer than %d bytes", maxValueLen)
	}
	return v, nil
}

// FormatTable writes `clawd secret ls` output: name, hosts, placeholder,
// created, rotated. It shows metadata only. It returns the first write
// error (callers may ignore it).
func FormatTable(w io.Writer, list []Secret) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHOSTS\tPLACEHOLDER\tCREATED\tROTATED")
	for _, s := range list {
		hosts, ph := strings.Join(s.Hosts, ","), s.Placeholder
		if s.Clawd {
			hosts, ph = "(clawd-owned)", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, hosts, ph, fmtTime(s.Created), fmtTime(s.Rotated))
	}
	return tw.Flush()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// EnvLines returns NAME=placeholder lines for `clawd attach --env`: one
// CLAWD_SECRET_<NAME> per secret, plus the variables its preset's SDKs
// read (ANTHROPIC_API_KEY, OPENAI_API_KEY, GITHUB_TOKEN, GH_TOKEN) and any
// Secret.Env. When two secrets claim one variable the first by name wins.
func EnvLines(list []Secret) []string {
	seen := make(map[string]bool)
	var out []string
	add := func(k, v string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k+"="+v)
		}
	}
	list = slices.DeleteFunc(slices.Clone(list), func(s Secret) bool { return s.Clawd }) // agents never hold these
	for _, s := range list {
		add("CLAWD_SECRET_"+strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_")), s.Placeholder)
	}
	for _, s := range list {
		for _, e := range s.Env {
			add(e, s.Placeholder)
		}
	}
	return out
}
