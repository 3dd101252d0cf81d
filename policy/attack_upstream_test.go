package policy

import (
	"strings"
	"testing"
)

// The natural mistake: the README says the credential secret holds
// "user:password", so an operator writes that into `credential:`. The parse
// error then quotes it back in full ("credential \"corp-user:Hunter2pw\" is
// not a secret name ... never the password itself") and that text goes to
// `clawd policy check`, the daemon log on a failed reload and `clawd
// status` (LastError). The userinfo case (`http://u:p@host`) is careful not
// to echo; the credential case is not. Invariant: credentials never appear
// in logs or errors.
func TestAttackUpstreamCredentialPasswordEchoedInError(t *testing.T) {
	for _, cred := range []string{
		`"corp-user:Hunter2pw"`, // user:password as the README describes the secret's value
		`"Hunter2pw!"`,          // the bare password
		`"hunter2pw secret"`,
	} {
		y := "default:\n  default_action: deny\n  rules:\n    - name: r\n      action: allow\n      upstream_proxy: {url: \"http://proxy.corp.example:3128\", credential: " + cred + "}\n"
		_, err := Parse([]byte(y), "test.yaml")
		if err == nil {
			t.Errorf("credential %s: parsed", cred)
			continue
		}
		if strings.Contains(strings.ToLower(err.Error()), "hunter2pw") {
			t.Errorf("credential %s: the policy error echoes what is likely the password: %q", cred, err)
		}
	}
}

// What held: URL tricks are refused or canonicalised, and none is echoed
// with userinfo.
func TestAttackUpstreamURLTricksHeld(t *testing.T) {
	bad := []string{
		"http://p:0", "http://p:65536", "http://p:03128", "http://p:+80", "http://p", "http://p:",
		"http://[fe80::1%25eth0]:3128", "http://0x7f.1:80", "http://127.1:80", "http://2130706433:80",
		"http://p%0d%0ax:80", "http://p x:80", "http://p:80/", "http://p:80?", "http://p:80#",
		"socks5://p:80", "http://:80", "http://u:hunter2@p:80", "http://p\\@q:80", "http://*.p:80",
		"http://p:８０", "http://ｐ:80", "None", "NONE", "none ", "off", "direct", "false",
	}
	for _, s := range bad {
		u, err := ParseUpstreamProxyURL(s)
		if err == nil {
			t.Errorf("%q accepted as %+v", s, u)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: error echoes the password: %v", s, err)
		}
	}
	good := map[string]string{
		"HTTP://p:3128":                  "http://p:3128",
		"Http://P.Corp.:3128":            "http://p.corp:3128",
		"http://[::ffff:127.0.0.1]:3128": "http://127.0.0.1:3128",
	}
	for in, want := range good {
		u, err := ParseUpstreamProxyURL(in)
		if err != nil || u.String() != want {
			t.Errorf("%q -> %v %v, want %s", in, u, err, want)
		}
	}
	// none spelled otherwise is an error on a rule, not "direct".
	for _, v := range []string{"None", "NONE", `"none "`, "~", `""`, "null", "false"} {
		y := "default:\n  default_action: deny\n  upstream_proxy: http://p:1\n  rules:\n    - name: r\n      action: allow\n      upstream_proxy: " + v + "\n"
		if _, err := Parse([]byte(y), "test.yaml"); err == nil {
			// `"none "` is trimmed to none by ps.str: that one is acceptable.
			if v != `"none "` {
				t.Errorf("upstream_proxy: %s parsed", v)
			}
		}
	}
	// On a deny rule (and on a readonly one it is kept), on the set with none.
	if _, err := Parse([]byte("default:\n  upstream_proxy: none\n  rules: []\n"), "t.yaml"); err == nil {
		t.Error("set-level none parsed")
	}
	if _, err := Parse([]byte("default:\n  rules:\n    - name: r\n      action: deny\n      upstream_proxy: http://p:1\n"), "t.yaml"); err == nil {
		t.Error("upstream_proxy on a deny rule parsed")
	}
}
