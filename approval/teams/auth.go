package teams

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/clawd-dev/clawd/approval"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Skew is the clock skew allowed on exp and nbf, as the Bot Framework
// authentication spec says.
const Skew = 5 * time.Minute

// maxDoc bounds the OpenID metadata and JWKS documents.
const maxDoc = 1 << 20

// errAuth is every verification failure; its text is logged, never shown.
var errAuth = errors.New("teams: unauthenticated")

// claims are a Bot Connector token's claims.
type claims struct {
	jwt.RegisteredClaims
	ServiceURL string `json:"serviceurl"`
}

// verifier checks the JWT on activities from the Bot Connector: RS256 with
// a key from the OpenID metadata's jwks_uri, issuer, audience = app id,
// exp/nbf with 5 min skew, serviceurl = the activity's serviceUrl, and the
// key's endorsements include msteams.
type verifier struct {
	metadata string
	appID    string
	client   *http.Client
	now      func() time.Time
	log      *zap.Logger
	// unknownKID rate-limits refreshes of the key set for an unknown kid
	// (keyfunc's default: one per 5 minutes); tests may raise it.
	unknownKID *rate.Limiter

	mu     sync.Mutex
	kf     keyfunc.Keyfunc
	ends   *endorsements
	stop   context.CancelFunc // ends the key refresh goroutine
	failed time.Time          // last failure to load the keys
}

func newVerifier(metadata, appID string, client *http.Client, now func() time.Time, log *zap.Logger) *verifier {
	return &verifier{metadata: metadata, appID: appID, client: client, now: now, log: log,
		unknownKID: rate.NewLimiter(rate.Every(5*time.Minute), 1)}
}

// verify checks the Authorization header for an activity whose
// serviceUrl is serviceURL, and returns when the token expires (with the
// skew): until then the activity must not be accepted again.
func (v *verifier) verify(ctx context.Context, header, serviceURL string) (time.Time, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" || len(raw) > 16<<10 {
		return time.Time{}, fmt.Errorf("%w: no bearer token", errAuth)
	}
	kf, ends, err := v.keys(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var cl claims
	tok, err := jwt.ParseWithClaims(raw, &cl, kf.KeyfuncCtx(ctx),
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(Issuer),
		jwt.WithAudience(v.appID),
		jwt.WithLeeway(Skew),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(v.now),
	)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %v", errAuth, err)
	}
	kid, _ := tok.Header["kid"].(string)
	if kid == "" {
		return time.Time{}, fmt.Errorf("%w: token has no kid", errAuth)
	}
	if e, ok := ends.get(kid); ok && len(e) > 0 && !slices.Contains(e, ChannelID) {
		return time.Time{}, fmt.Errorf("%w: key %s is not endorsed for %s", errAuth, kid, ChannelID)
	}
	if cl.ServiceURL == "" || cl.ServiceURL != serviceURL {
		return time.Time{}, fmt.Errorf("%w: serviceurl claim does not match the activity's serviceUrl", errAuth)
	}
	return cl.ExpiresAt.Add(Skew), nil
}

// keys returns the key function, reading the OpenID metadata the first
// time (and again after a failure).
func (v *verifier) keys(ctx context.Context) (keyfunc.Keyfunc, *endorsements, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.kf != nil {
		return v.kf, v.ends, nil
	}
	// After a failure, wait before asking again: unauthenticated requests
	// must not turn into a stream of requests to the metadata endpoint.
	if !v.failed.IsZero() && v.now().Sub(v.failed) < retryMetadata {
		return nil, nil, fmt.Errorf("%w: signing keys unavailable (last attempt failed)", errAuth)
	}
	kf, ends, err := v.load(ctx)
	if err != nil {
		v.failed = v.now()
		v.log.Warn("teams: cannot load the Bot Framework signing keys", zap.Error(err))
		return nil, nil, err
	}
	v.kf, v.ends, v.failed = kf, ends, time.Time{}
	return kf, ends, nil
}

// retryMetadata is how long after a failure the keys are not fetched.
const retryMetadata = 30 * time.Second

// load reads the OpenID metadata, then starts the key set from its
// jwks_uri.
func (v *verifier) load(ctx context.Context) (keyfunc.Keyfunc, *endorsements, error) {
	jwks, err := v.jwksURI(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: openid metadata: %v", errAuth, err)
	}
	ends := &endorsements{}
	base := v.client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	client := &http.Client{Transport: &capture{base: base, ends: ends}, Timeout: 30 * time.Second}
	// The refresh goroutine lives as long as the channel (the process).
	kctx, cancel := context.WithCancel(context.Background())
	v.stop = cancel
	noErr := false
	kf, err := keyfunc.NewDefaultOverrideCtx(kctx, []string{jwks}, keyfunc.Override{
		Client:                    client,
		HTTPTimeout:               30 * time.Second,
		NoErrorReturnFirstHTTPReq: &noErr,
		RefreshInterval:           time.Hour,
		RefreshUnknownKID:         v.unknownKID,
		// An unknown kid past the rate limit fails now instead of
		// holding the request (rate.Limiter.Wait refuses at once a wait
		// longer than this). The same deadline bounds the refresh's
		// fetch of the rotated keys (jwkset passes it on): at 1 ms that
		// fetch failed whenever it took longer, so a rotated key was
		// refused with 401 (seen on a loaded CI machine; on a real
		// network, always).
		RateLimitWaitMax: 10 * time.Second,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				v.log.Warn("teams: refreshing the Bot Framework signing keys failed", zap.Error(err))
			}
		},
	})
	if err != nil {
		cancel()
		v.stop = nil
		return nil, nil, fmt.Errorf("%w: signing keys: %v", errAuth, err)
	}
	return kf, ends, nil
}

// jwksURI reads jwks_uri from the OpenID metadata document.
func (v *verifier) jwksURI(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.metadata, nil)
	if err != nil {
		return "", err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return "", scrubErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var m struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDoc)).Decode(&m); err != nil {
		return "", err
	}
	u, err := url.Parse(m.JWKSURI)
	if err != nil || !approval.SecureScheme(u, "https", "http") || u.User != nil {
		return "", errors.New("jwks_uri is not an https URL")
	}
	return m.JWKSURI, nil
}

// endorsements are the "endorsements" of each key (by kid) in the last
// JWKS document read; jwkset does not keep that Bot Framework field.
type endorsements struct {
	mu  sync.Mutex
	kid map[string][]string
}

func (e *endorsements) get(kid string) ([]string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.kid[kid]
	return v, ok
}

// capture reads each JWKS response (bounded) and records the keys'
// endorsements before handing the same bytes to jwkset.
type capture struct {
	base http.RoundTripper
	ends *endorsements
}

func (c *capture) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDoc+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(data) > maxDoc {
		return nil, errors.New("JWKS document is too large")
	}
	var set struct {
		Keys []struct {
			KID          string   `json:"kid"`
			Endorsements []string `json:"endorsements"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS document: %w", err)
	}
	m := make(map[string][]string, len(set.Keys))
	for _, k := range set.Keys {
		m[k.KID] = k.Endorsements
	}
	c.ends.mu.Lock()
	c.ends.kid = m
	c.ends.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = int64(len(data))
	return resp, nil
}

// seen remembers activity ids until their token could no longer be used
// (the token's window), so a replayed activity is refused.
type seen struct {
	mu  sync.Mutex
	ids map[string]time.Time
}

func newSeen() *seen { return &seen{ids: map[string]time.Time{}} }

// maxSeen bounds the memory; past it the oldest entries are dropped first
// (they are the first to expire).
const maxSeen = 100000

// add records id until "until" and reports whether it is new.
func (s *seen) add(id string, now, until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, ok := s.ids[id]; ok && now.Before(exp) {
		return false
	}
	if len(s.ids) >= maxSeen/2 {
		for k, exp := range s.ids {
			if !now.Before(exp) {
				delete(s.ids, k)
			}
		}
	}
	for len(s.ids) >= maxSeen {
		var oldK string
		var oldT time.Time
		for k, exp := range s.ids {
			if oldK == "" || exp.Before(oldT) {
				oldK, oldT = k, exp
			}
		}
		delete(s.ids, oldK)
	}
	s.ids[id] = until
	return true
}

// close ends the key refresh goroutine, if one runs.
func (v *verifier) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stop != nil {
		v.stop()
		v.stop, v.kf = nil, nil
	}
}
