package ntfy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
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

// entry is what a one-time token stands for. Only its SHA-256 is kept (in
// memory and on disk): the raw token exists only in the published action.
type entry struct {
	Approval string    `json:"approval"`
	Value    string    `json:"value"`    // the card button's Value
	Approver string    `json:"approver"` // who it was issued to
	Expires  time.Time `json:"expires"`
}

// state is the channel's small persistent state in StateDir: the token
// hashes, the generated reply topic and the last reply message processed.
type state struct {
	dir  string
	base string // file name prefix (the channel name)

	mu     sync.Mutex
	tokens map[string]entry // hex sha256 → entry
	since  string
}

type tokenFile struct {
	Version int              `json:"version"`
	Tokens  map[string]entry `json:"tokens"`
}

var safeName = strings.NewReplacer("/", "_", "\\", "_", "..", "_")

func openState(dir, name string) (*state, error) {
	st := &state{dir: dir, base: "ntfy-" + safeName.Replace(name), tokens: map[string]entry{}}
	b, err := os.ReadFile(st.path("tokens.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("state: %w", err)
	default:
		var f tokenFile
		if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
			return nil, fmt.Errorf("state: %s is not a token file this version knows", st.path("tokens.json"))
		}
		for h, e := range f.Tokens {
			if len(h) == 64 && isLowerHex(h) {
				st.tokens[h] = e
			}
		}
	}
	if b, err := os.ReadFile(st.path("since")); err == nil {
		if s := strings.TrimSpace(string(b)); messageIDRe.MatchString(s) {
			st.since = s
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("state: %w", err)
	}
	return st, nil
}

func (s *state) path(f string) string { return filepath.Join(s.dir, s.base+"."+f) }

// replyTopic returns the persisted reply topic, generating one (160 random
// bits) on first use.
func (s *state) replyTopic() (string, error) {
	p := s.path("reply-topic")
	if b, err := os.ReadFile(p); err == nil {
		t := strings.TrimSpace(string(b))
		if !topicRe.MatchString(t) {
			return "", fmt.Errorf("state: %s does not hold a topic name", p)
		}
		return t, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("state: %w", err)
	}
	r := make([]byte, 20)
	if _, err := rand.Read(r); err != nil {
		return "", err
	}
	t := "clawd-reply-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(r))
	if err := writeFile(p, []byte(t+"\n")); err != nil {
		return "", fmt.Errorf("state: %w", err)
	}
	return t, nil
}

func (s *state) add(hash string, e entry) {
	s.mu.Lock()
	s.tokens[hash] = e
	s.mu.Unlock()
}

func (s *state) remove(hashes ...string) {
	s.mu.Lock()
	for _, h := range hashes {
		delete(s.tokens, h)
	}
	s.mu.Unlock()
}

// take consumes the token with that hash: it returns its entry and whether
// it was there, unexpired at now. An expired token is dropped as well.
func (s *state) take(hash string, now time.Time) (entry, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.tokens[hash]
	if !ok {
		return entry{}, false, false
	}
	delete(s.tokens, hash)
	return e, true, now.Before(e.Expires)
}

func (s *state) revokeApproval(id string) error {
	s.mu.Lock()
	n := 0
	for h, e := range s.tokens {
		if e.Approval == id {
			delete(s.tokens, h)
			n++
		}
	}
	s.mu.Unlock()
	if n == 0 {
		return nil
	}
	return s.save(time.Time{})
}

// save writes the token hashes, dropping the ones expired at now (zero now:
// drop none).
func (s *state) save(now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !now.IsZero() {
		for h, e := range s.tokens {
			if !now.Before(e.Expires) {
				delete(s.tokens, h)
			}
		}
	}
	b, err := json.Marshal(tokenFile{Version: 1, Tokens: s.tokens})
	if err != nil {
		return err
	}
	return writeFile(s.path("tokens.json"), b)
}

func (s *state) lastID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.since
}

func (s *state) setLastID(id string) error {
	s.mu.Lock()
	s.since = id
	s.mu.Unlock()
	return writeFile(s.path("since"), []byte(id+"\n"))
}

// writeFile replaces p atomically with mode 0600.
func writeFile(p string, b []byte) error { return atomicfile.WriteFile(p, b, 0o600) }

// newToken returns a 256-bit random token (64 hex digits) and its hash.
func newToken() (tok, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	tok = hex.EncodeToString(b)
	return tok, hashToken(tok), nil
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
