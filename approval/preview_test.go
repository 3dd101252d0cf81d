package approval

import (
	"strings"
	"testing"
)

func TestSecretShapes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"key sk_live_51HxYzAbCdEfGh", "key [redacted]"},
		{"ghp_0123456789abcdefghijABCDEFGHIJ012345", "[redacted]"},
		{"Authorization: Bearer abc.def.ghi12345", "Authorization: Bearer [redacted]"},
		{"tok=Zk9QmX3vB7nR2pL8sT4wY6cJ1hD5fG0a", "tok=[redacted]"},
		{"/repos/some-long-organisation-name/another-long-repository-name", "/repos/some-long-organisation-name/another-long-repository-name"},
		{"plain words stay", "plain words stay"},
	} {
		if got := redactSecretShapes(tc.in); got != tc.want {
			t.Errorf("redactSecretShapes(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBodyPreview(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BodyPreviewLimit = 8 })
	h := hold("a", "POST", "/x")
	h.Body = []byte("0123456789abcdef")
	h.BodySize = 16
	a := e.m.view(&h)
	if a.Body != "01234567" || !a.BodyTruncated {
		t.Fatalf("preview %q truncated=%v", a.Body, a.BodyTruncated)
	}
	// A secret across the preview limit is redacted before the cut.
	h.Body = []byte("abcdSECRET-VALUE-123")
	if a := e.m.view(&h); strings.Contains(a.Body, "SECR") {
		t.Fatalf("cut secret leaked: %q", a.Body)
	}
	h.Body = []byte{0xff, 0xfe, 0x00, 0x01}
	if a := e.m.view(&h); !strings.Contains(a.Body, "binary") {
		t.Fatalf("binary preview %q", a.Body)
	}
}
