package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Client talks to a running daemon over its control socket.
type Client struct {
	Socket string
	HTTP   *http.Client
}

// NewClient returns a client for the control socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, HTTP: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// BaseURL is the URL prefix for requests over the socket.
const BaseURL = "http://clawd"

// Do sends a JSON request and decodes a JSON answer into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, BaseURL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return c.explain(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("clawd answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// explain turns socket errors into what the operator should do.
func (c *Client) explain(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("cannot reach the clawd daemon at %s: is it running? (systemctl start clawd, or clawd daemon)", c.Socket)
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("permission denied on %s: clawd's control socket is root-only (run as root)", c.Socket)
	}
	return fmt.Errorf("control socket %s: %w", c.Socket, err)
}

// Attach asks the daemon to attach a container.
func (c *Client) Attach(ctx context.Context, req AttachRequest) (Record, error) {
	var r Record
	err := c.Do(ctx, "POST", "/v1/attach", req, &r)
	return r, err
}

// Detach asks the daemon to detach a container; namespace "" matches any.
func (c *Client) Detach(ctx context.Context, ref, namespace string) (Record, error) {
	var r Record
	err := c.Do(ctx, "POST", "/v1/detach", map[string]string{"container": ref, "namespace": namespace}, &r)
	return r, err
}

// Inspect asks the daemon which runtimes a container holds and whether
// each trusts clawd's CA.
func (c *Client) Inspect(ctx context.Context, req InspectRequest) (InspectReport, error) {
	var r InspectReport
	err := c.Do(ctx, "POST", "/v1/inspect", req, &r)
	return r, err
}

// List returns the attachments.
func (c *Client) List(ctx context.Context) ([]AttachmentInfo, error) {
	var out []AttachmentInfo
	err := c.Do(ctx, "GET", "/v1/attachments", nil, &out)
	return out, err
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.Do(ctx, "GET", "/v1/status", nil, &s)
	return s, err
}

// ReloadPolicy asks the daemon to re-read its policy file.
func (c *Client) ReloadPolicy(ctx context.Context) error {
	return c.Do(ctx, "POST", "/v1/policy/reload", nil, nil)
}

// CA returns the daemon's interception CA certificate (PEM).
func (c *Client) CA(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", BaseURL+"/v1/ca", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, c.explain(err)
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// Wait polls until the daemon answers or ctx ends.
func (c *Client) Wait(ctx context.Context) error {
	for {
		if _, err := c.Status(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
