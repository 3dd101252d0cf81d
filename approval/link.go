package approval

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"
)

// Signed links let someone with the card approve or deny without a token.
// The signature covers id, the request digest, action and expiry, so a link
// cannot be reused for another approval or request, or turned from deny
// into approve.
// SignLink is the signature of a link: HMAC-SHA256 under key (Config.LinkKey).
func SignLink(key []byte, id, digest, action string, exp int64) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("clawd-link-v2\x00" + id + "\x00" + digest + "\x00" + action + "\x00" + strconv.FormatInt(exp, 10)))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (m *Manager) linkURL(id, digest, action string, exp time.Time) string {
	e := exp.Unix()
	q := url.Values{"exp": {strconv.FormatInt(e, 10)}, "sig": {SignLink(m.linkKey, id, digest, action, e)}}
	return m.cfg.PublicURL + "/v1/links/" + id + "/" + action + "?" + q.Encode()
}

// CheckLink verifies a signed link's signature and expiry and returns the
// digest of the request it was made for ("", false when it is not valid).
func (m *Manager) CheckLink(id, action, exp, sig string) (string, bool) {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || !validID(id) {
		return "", false
	}
	a, err := m.Get(id)
	if err != nil {
		return "", false
	}
	want := SignLink(m.linkKey, id, a.Digest, action, e)
	if !hmac.Equal([]byte(want), []byte(sig)) || m.now().Unix() > e {
		return "", false
	}
	return a.Digest, true
}
