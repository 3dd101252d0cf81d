package gchat

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Google ID token issuers.
var googleIssuers = map[string]bool{"accounts.google.com": true, "https://accounts.google.com": true}

// skew is the clock difference allowed on exp, iat and eventTime.
const skew = 2 * time.Minute

// verifier checks the bearer token of an interaction event, as Google's
// "Verify requests from Google Chat" says for the app's authentication
// audience:
//   - project number: a JWT issued and self-signed by
//     chat@system.gserviceaccount.com (its x509 certificates), aud = the
//     project number;
//   - HTTP endpoint URL: a Google ID token (JWKS), aud = the endpoint URL,
//     email = chat@system.gserviceaccount.com, email_verified. Anyone can get
//     a Google ID token for any audience, so the email is what says Chat.
type verifier struct {
	audType, audience string
	keys              *keySet
	now               func() time.Time
}

type chatClaims struct {
	jwt.RegisteredClaims
	Email         string `json:"email"`
	EmailVerified any    `json:"email_verified"`
}

func (v *verifier) verify(ctx context.Context, raw string) error {
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(skew),
		jwt.WithTimeFunc(v.now),
	)
	var c chatClaims
	_, err := p.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("no key ID")
		}
		return v.keys.key(ctx, kid)
	})
	if err != nil {
		return err
	}
	if c.IssuedAt == nil {
		return errors.New("no iat")
	}
	switch v.audType {
	case AudienceProjectNumber:
		if c.Issuer != ChatIssuer {
			return fmt.Errorf("issuer is not %s", ChatIssuer)
		}
	case AudienceEndpointURL:
		if !googleIssuers[c.Issuer] {
			return errors.New("issuer is not Google")
		}
		if c.Email != ChatIssuer {
			return fmt.Errorf("the ID token is not for %s", ChatIssuer)
		}
		if ev, ok := c.EmailVerified.(bool); !ok || !ev {
			return errors.New("the ID token's email is not verified")
		}
	default:
		return errors.New("no audience type")
	}
	return nil
}

// keySet is a cached set of public keys by key ID, fetched from a URL.
type keySet struct {
	url   string
	parse func([]byte) (map[string]*rsa.PublicKey, error)
	http  *http.Client
	now   func() time.Time

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time // last fetch attempt
	good    time.Time // last successful fetch
}

// Keys are refetched after keysMaxAge, and for an unknown key ID at most
// every keysMinGap (so tokens with made-up key IDs cannot make clawd hammer
// Google).
const (
	keysMaxAge = time.Hour
	keysMinGap = 30 * time.Second
)

func newKeySet(u string, parse func([]byte) (map[string]*rsa.PublicKey, error), c *http.Client, now func() time.Time) *keySet {
	return &keySet{url: u, parse: parse, http: c, now: now}
}

func (k *keySet) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	stale := k.keys == nil || now.Sub(k.good) > keysMaxAge
	if key, ok := k.keys[kid]; ok && !stale {
		return key, nil
	}
	if k.fetched.IsZero() || now.Sub(k.fetched) >= keysMinGap || now.Before(k.fetched) {
		k.fetched = now
		keys, err := k.fetch(ctx)
		if err != nil {
			if key, ok := k.keys[kid]; ok {
				return key, nil // keep using the known key while the URL fails
			}
			return nil, err
		}
		k.keys, k.good = keys, now
	}
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	return nil, errors.New("unknown key ID")
}

func (k *keySet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch keys: %w", redactURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch keys: %s", resp.Status)
	}
	b, err := io.ReadAll(limitBody(resp))
	if err != nil {
		return nil, fmt.Errorf("fetch keys: %w", err)
	}
	keys, err := k.parse(b)
	if err != nil {
		return nil, fmt.Errorf("fetch keys: %w", err)
	}
	return keys, nil
}

// parseX509Certs reads Google's x509 metadata: {"kid": "-----BEGIN CERTIFICATE-----…"}.
func parseX509Certs(b []byte) (map[string]*rsa.PublicKey, error) {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.New("not a JSON object of certificates")
	}
	out := map[string]*rsa.PublicKey{}
	for kid, p := range m {
		blk, _ := pem.Decode([]byte(p))
		if blk == nil || blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			continue
		}
		if k, ok := cert.PublicKey.(*rsa.PublicKey); ok {
			out[kid] = k
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no RSA certificates")
	}
	return out, nil
}

// parseJWKS reads a JSON Web Key Set of RSA keys.
func parseJWKS(b []byte) (map[string]*rsa.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty, Kid, N, E, Alg, Use string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, errors.New("not a JWKS")
	}
	out := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || k.Kid == "" || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != "RS256") {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			continue
		}
		ei := int(new(big.Int).SetBytes(e).Int64())
		if ei < 3 {
			continue
		}
		out[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ei}
	}
	if len(out) == 0 {
		return nil, errors.New("no RSA keys")
	}
	return out, nil
}
