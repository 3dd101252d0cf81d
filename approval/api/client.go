package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clawd-dev/clawd/approval"
)

// Client talks to the approval API, over the unix control socket (give HTTP
// a unix dialer and Base "http://clawd") or the TCP listener with Token.
type Client struct {
	HTTP  *http.Client // nil = http.DefaultClient
	Base  string       // e.g. "http://127.0.0.1:8787"
	Token string       // bearer token for the TCP listener; "" on the socket
}

// APIError is a non-2xx answer. Status is the HTTP status (404 unknown,
// 409 decided otherwise, 410 no longer pending).
type APIError struct {
	Status   int
	Message  string
	Approval *approval.Approval
}

func (e *APIError) Error() string { return fmt.Sprintf("clawd: %s (HTTP %d)", e.Message, e.Status) }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("clawd api: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("clawd api: read: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(b))
		}
		return &APIError{Status: resp.StatusCode, Message: eb.Error, Approval: eb.Approval}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("clawd api: bad response: %w", err)
		}
	}
	return nil
}

// List returns pending approvals, of one container if container != "".
func (c *Client) List(ctx context.Context, container string) ([]approval.Approval, error) {
	r, err := c.list(ctx, container, 0, 0)
	return r.Approvals, err
}

type listResp struct {
	Approvals []approval.Approval `json:"approvals"`
	Version   uint64              `json:"version"`
}

func (c *Client) list(ctx context.Context, container string, wait time.Duration, since uint64) (listResp, error) {
	q := url.Values{}
	if container != "" {
		q.Set("container", container)
	}
	if wait > 0 {
		q.Set("wait", wait.String())
		q.Set("since", strconv.FormatUint(since, 10))
	}
	p := "/v1/approvals"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var r listResp
	err := c.do(ctx, "GET", p, nil, &r)
	return r, err
}

// Get returns one approval, pending or decided.
func (c *Client) Get(ctx context.Context, id string) (*approval.Approval, error) {
	var a approval.Approval
	if err := c.do(ctx, "GET", "/v1/approvals/"+url.PathEscape(id), nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Approve approves id; d > 0 also grants matching requests for d.
func (c *Client) Approve(ctx context.Context, id string, d time.Duration) (*approval.Approval, error) {
	var in DecideRequest
	if d > 0 {
		in.For = d.String()
	}
	var a approval.Approval
	if err := c.do(ctx, "POST", "/v1/approvals/"+url.PathEscape(id)+"/approve", in, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Deny denies id; reason is shown to the agent.
func (c *Client) Deny(ctx context.Context, id, reason string) (*approval.Approval, error) {
	var a approval.Approval
	if err := c.do(ctx, "POST", "/v1/approvals/"+url.PathEscape(id)+"/deny", DecideRequest{Reason: reason}, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Watch calls fn with the pending set now and after every change until ctx
// is done (returning nil) or the API fails.
func (c *Client) Watch(ctx context.Context, fn func([]approval.Approval)) error {
	return c.WatchContainer(ctx, "", fn)
}

// WatchContainer is Watch for one container's approvals.
func (c *Client) WatchContainer(ctx context.Context, container string, fn func([]approval.Approval)) error {
	r, err := c.list(ctx, container, 0, 0)
	if err != nil {
		return err
	}
	fn(r.Approvals)
	last := watchKey(r.Approvals)
	for {
		next, err := c.list(ctx, container, time.Minute, r.Version)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		// The version also moves for changes the list does not show
		// (another container's approvals, a card being sent).
		if k := watchKey(next.Approvals); k != last {
			fn(next.Approvals)
			last = k
		}
		r = next
	}
}

func watchKey(as []approval.Approval) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "%s/%s/%d,", a.ID, a.Status, a.Waiters)
	}
	return b.String()
}

// Grants lists active grants.
func (c *Client) Grants(ctx context.Context) ([]approval.Grant, error) {
	var gs []approval.Grant
	err := c.do(ctx, "GET", "/v1/grants", nil, &gs)
	return gs, err
}

// RevokeGrant deletes a grant.
func (c *Client) RevokeGrant(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/grants/"+url.PathEscape(id), nil, nil)
}

// IsStatus reports whether err is an APIError with HTTP status code.
func IsStatus(err error, code int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == code
}

// FormatTable writes pending approvals as a table: ID, age, container,
// method, URL (cut to keep lines readable), summary.
func FormatTable(w io.Writer, as []approval.Approval, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGE\tCONTAINER\tMETHOD\tURL\tSUMMARY")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, age(now.Sub(a.Created)), oneLine(a.Container.Name, 30),
			oneLine(a.Method, 10), oneLine(a.URL, 60), oneLine(a.Summary, 60))
	}
	return tw.Flush()
}

// FormatGrants writes grants as a table with the time left.
func FormatGrants(w io.Writer, gs []approval.Grant, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLEFT\tCONTAINER\tRULE\tMETHOD\tHOST\tPATH\tBY")
	for _, g := range gs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, age(g.Expires.Sub(now)), oneLine(g.Container, 30),
			oneLine(g.Rule, 30), oneLine(g.Method, 10), oneLine(g.Host, 40), oneLine(g.Path, 50), oneLine(g.By, 30))
	}
	return tw.Flush()
}

func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// oneLine strips control characters (an agent-chosen URL must not move the
// terminal cursor) and cuts s to n runes.
func oneLine(s string, n int) string {
	var b strings.Builder
	i, total := 0, len([]rune(s))
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		if i == n-1 && total > n {
			b.WriteRune('…')
			break
		}
		b.WriteRune(r)
		i++
	}
	return b.String()
}
