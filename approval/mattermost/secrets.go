package mattermost

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"
)

// Mattermost does not sign the requests it sends to an action's
// integration URL. What it does keep from clients is the action's
// integration (URL and context): it strips it from every post it hands to
// a client. So each button carries a fresh 256-bit secret in its context;
// clawd keeps only the SHA-256 of it, bound to what the button may do.

// binding is what one button secret stands for.
type binding struct {
	Approval string    `json:"approval"`
	Value    string    `json:"value"`   // the card button's Value
	Channel  string    `json:"channel"` // the channel the card was posted to
	Post     string    `json:"post"`    // the post carrying it ("" until the post is created)
	Issue    string    `json:"issue"`   // one card rendering: its buttons are used up together
	Expires  time.Time `json:"expires"`
}

// secrets is the set of live button secrets, persisted in StateDir so that
// cards posted before a restart keep working.
type secrets struct {
	path string // "" = memory only

	mu sync.Mutex
	m  map[string]binding // hex sha256 → binding
	// ready is closed when the post of an issue is known (or the post
	// failed): a click can arrive before the create call has returned.
	ready map[string]chan struct{}
}

type secretsFile struct {
	Version int                `json:"version"`
	Secrets map[string]binding `json:"secrets"`
}

const secretsVersion = 1

var safeName = strings.NewReplacer("/", "_", "\\", "_", "..", "_")

// openSecrets loads the persisted secrets of the channel name in dir ("" =
// keep them in memory only), dropping those expired at now.
func openSecrets(dir, name string, now time.Time) (*secrets, error) {
	s := &secrets{m: map[string]binding{}, ready: map[string]chan struct{}{}}
	if dir == "" {
		return s, nil
	}
	s.path = filepath.Join(dir, "mattermost-"+safeName.Replace(name)+".secrets.json")
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("button secrets: %w", err)
	}
	var f secretsFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != secretsVersion {
		return nil, fmt.Errorf("button secrets: %s is not a file this version of clawd knows", s.path)
	}
	for h, e := range f.Secrets {
		if len(h) == 64 && isLowerHex(h) && now.Before(e.Expires) {
			s.m[h] = e
		}
	}
	return s, nil
}

// newSecret returns a 256-bit random secret (43 base64url characters).
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// secretLen is the length of a secret as it appears in a context.
const secretLen = 43

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// validSecret reports whether s has the shape of a secret clawd issues.
func validSecret(s string) bool {
	if len(s) != secretLen {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// add records the hashes of new secrets and persists them.
func (s *secrets) add(bs map[string]binding, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, b := range bs {
		s.m[h] = b
		if b.Post == "" && s.ready[b.Issue] == nil {
			s.ready[b.Issue] = make(chan struct{})
		}
	}
	return s.saveLocked(now)
}

// setPost binds the secrets of one issue to the post that carries them.
func (s *secrets) setPost(issue, post string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, b := range s.m {
		if b.Issue == issue {
			b.Post = post
			s.m[h] = b
		}
	}
	s.settleLocked(issue)
	return s.saveLocked(now)
}

// settleLocked wakes the clicks waiting for the post of issue.
func (s *secrets) settleLocked(issue string) {
	if ch := s.ready[issue]; ch != nil {
		close(ch)
		delete(s.ready, issue)
	}
}

// drop forgets the secrets of an issue whose post never reached the server.
func (s *secrets) drop(issue string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, b := range s.m {
		if b.Issue == issue {
			delete(s.m, h)
		}
	}
	s.settleLocked(issue)
	return s.saveLocked(now)
}

// waitPost waits until the post of issue is known or failed (nil: it is
// already settled).
func (s *secrets) waitPost(issue string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch := s.ready[issue]; ch != nil {
		return ch
	}
	done := make(chan struct{})
	close(done)
	return done
}

// lookup finds the binding of a presented secret without using it up.
func (s *secrets) lookup(secret string, now time.Time) (binding, bool) {
	h := hashSecret(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, b := range s.m {
		// The map is keyed by hash; the compare is constant-time anyway
		// so that no timing depends on the presented secret.
		if subtle.ConstantTimeCompare([]byte(k), []byte(h)) == 1 {
			if !now.Before(b.Expires) {
				delete(s.m, k)
				return binding{}, false
			}
			return b, true
		}
	}
	return binding{}, false
}

// take uses up the secret and every other button of its issue: exactly
// one caller gets ok for a given secret.
func (s *secrets) take(secret string, now time.Time) (binding, bool, error) {
	h := hashSecret(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[h]
	if !ok || !now.Before(b.Expires) {
		delete(s.m, h)
		return binding{}, false, nil
	}
	for k, o := range s.m {
		if o.Issue == b.Issue {
			delete(s.m, k)
		}
	}
	return b, true, s.saveLocked(now)
}

// revoke drops every secret of the approval (it is no longer pending).
func (s *secrets) revoke(approvalID string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, b := range s.m {
		if b.Approval == approvalID {
			delete(s.m, k)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return s.saveLocked(now)
}

// count is the number of live secrets (for tests).
func (s *secrets) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *secrets) saveLocked(now time.Time) error {
	for k, b := range s.m {
		if !now.Before(b.Expires) {
			delete(s.m, k)
		}
	}
	if s.path == "" {
		return nil
	}
	b, err := json.Marshal(secretsFile{Version: secretsVersion, Secrets: s.m})
	if err != nil {
		return err
	}
	if err := writeFile(s.path, b); err != nil {
		return fmt.Errorf("button secrets: %w", err)
	}
	return nil
}

// writeFile replaces p atomically with mode 0600.
func writeFile(p string, b []byte) error { return atomicfile.WriteFile(p, b, 0o600) }

func isLowerHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
