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
// The signature covers id, action and expiry, so a link cannot be reused for
// another approval or turned from deny into approve.
func linkSig(key []byte, id, action string, exp int64) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("clawd-link\x00" + id + "\x00" + action + "\x00" + strconv.FormatInt(exp, 10)))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (m *Manager) linkURL(id, action string, exp time.Time) string {
	e := exp.Unix()
	q := url.Values{"exp": {strconv.FormatInt(e, 10)}, "sig": {linkSig(m.linkKey, id, action, e)}}
	return m.cfg.PublicURL + "/v1/links/" + id + "/" + action + "?" + q.Encode()
}

// checkLink verifies a link's signature and expiry.
func (m *Manager) checkLink(id, action, exp, sig string) bool {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return false
	}
	want := linkSig(m.linkKey, id, action, e)
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return false
	}
	return m.now().Unix() <= e
}
