package gchat

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenSource gets the app's access token with the OAuth 2.0 JWT bearer
// grant (RFC 7523) as Google's service accounts do: an RS256 JWT signed with
// the key, exchanged at the token URL, cached until shortly before expiry.
type tokenSource struct {
	email, keyID string
	key          *rsa.PrivateKey
	url          string
	http         *http.Client
	now          func() time.Time

	mu      sync.Mutex
	access  string
	expires time.Time
}

// assertionLife is how long the signed assertion is valid (Google: ≤ 1 h).
const assertionLife = time.Hour

func (t *tokenSource) token(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.access != "" && now.Before(t.expires.Add(-time.Minute)) {
		return t.access, nil
	}
	claims := jwt.MapClaims{
		"iss":   t.email,
		"scope": Scope,
		"aud":   t.url,
		"iat":   now.Unix(),
		"exp":   now.Add(assertionLife).Unix(),
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	if t.keyID != "" {
		tok.Header["kid"] = t.keyID
	}
	assertion, err := tok.SignedString(t.key)
	if err != nil {
		return "", errors.New("token: cannot sign the assertion with the service account key")
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := t.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("token: %w", redactURLError(err))
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	derr := json.NewDecoder(limitBody(resp)).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		msg := ""
		if derr == nil && out.Error != "" {
			msg = ": " + cut(oneLine(out.Error+" "+out.Description), 200)
		}
		return "", fmt.Errorf("token: %s from the token URL%s", resp.Status, msg)
	}
	if derr != nil || out.AccessToken == "" || !strings.EqualFold(out.TokenType, "bearer") && out.TokenType != "" {
		return "", errors.New("token: the token URL answered without a bearer access token")
	}
	life := time.Duration(out.ExpiresIn) * time.Second
	if life <= 0 || life > 24*time.Hour {
		life = 5 * time.Minute
	}
	t.access, t.expires = out.AccessToken, now.Add(life)
	return t.access, nil
}

// drop forgets tok if it is still the cached one.
func (t *tokenSource) drop(tok string) {
	t.mu.Lock()
	if t.access == tok {
		t.access = ""
	}
	t.mu.Unlock()
}

// parsePrivateKey reads the PEM private key of a JSON key (PKCS #8, as
// Google issues them, or PKCS #1).
func parsePrivateKey(s string) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		return nil, errors.New("private_key is not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("private_key is not an RSA key")
		}
		return rk, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("private_key is not a PKCS #8 or PKCS #1 RSA key")
}

// maxAnswer bounds what clawd reads from Google's answers.
const maxAnswer = 1 << 20

func limitBody(resp *http.Response) io.Reader { return io.LimitReader(resp.Body, maxAnswer) }
