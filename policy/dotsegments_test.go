package policy

import "testing"

func TestResolveDotSegments(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/v1/messages", "/v1/messages", false},
		{"/v1/messages/../models", "/v1/models", true},
		{"/v1/messages/./../models?x=/../y", "/v1/models?x=/../y", true},
		{"/v1/messages/x/../../models", "/v1/models", true},
		{"/v1/messages/%2e%2e/models", "/v1/models", true},
		{"/v1/messages/%2E./models/", "/v1/models/", true},
		{"/v1/messages/.%2e", "/v1/", true},
		{"/v1//messages/../models", "/v1/models", true}, // as normalizePath reads it
		{"/v1/a%20b/./c", "/v1/a%20b/c", true},          // escapes kept
		{"/v1/...", "/v1/...", false},                   // not a dot segment
		{"/v1/..a/b", "/v1/..a/b", false},
		{"/../x", "/../x", false}, // above the root: left for the policy to refuse
		{"/a/..", "/", true},
	} {
		got, ok := ResolveDotSegments(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ResolveDotSegments(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		if ok {
			a, _ := normalizePath(tc.in)
			b, _ := normalizePath(got)
			if len(a) != len(b) {
				t.Errorf("%q: the policy reads %v, the upstream would get %v", tc.in, a, b)
			}
			for i := range a {
				if i < len(b) && a[i] != b[i] {
					t.Errorf("%q: the policy reads %v, the upstream would get %v", tc.in, a, b)
				}
			}
		}
	}
}
