package email

import (
	"crypto/rand"
	"crypto/sha256"
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

// keepAfter is how long a token's hash is kept after it expired or was
// used, so its link answers "expired" / "already used" instead of
// "unknown".
const keepAfter = 24 * time.Hour

// token is what one link stands for. Only the SHA-256 of the link's token
// is kept (in memory and on disk): the token itself exists only in the
// message sent to its approver.
type token struct {
	Approval string    `json:"approval"`
	Act      string    `json:"act"`      // approval.ActApprove, ActApproveFor, ActDeny
	Approver string    `json:"approver"` // the address it was sent to
	Expires  time.Time `json:"expires"`
	Used     bool      `json:"used,omitempty"`
	// Closed is the approval's status once the channel saw it decided.
	Closed string `json:"closed,omitempty"`
}

// record is the channel's own copy of what it showed for an approval: the
// confirmation page shows it and the decision carries its Digest.
type record struct {
	Summary       string    `json:"summary"`
	Method        string    `json:"method"`
	URL           string    `json:"url"`
	Container     string    `json:"container"`
	Rule          string    `json:"rule"`
	Body          string    `json:"body,omitempty"`
	Digest        string    `json:"digest"`
	Expires       time.Time `json:"expires"`
	Required      int       `json:"required,omitempty"`
	FollowedUp    string    `json:"followed_up,omitempty"` // the final status a follow-up was sent for
	GrantsAllowed bool      `json:"grants_allowed,omitempty"`
}

type stateFile struct {
	Version int               `json:"version"`
	Tokens  map[string]token  `json:"tokens"`  // hex sha256 of the token → token
	Records map[string]record `json:"records"` // approval ID → record
}

// state is persisted in StateDir as email-NAME.json (mode 0600).
type state struct {
	path string

	mu      sync.Mutex
	tokens  map[string]token
	records map[string]record
}

var safeName = strings.NewReplacer("/", "_", "\\", "_", "..", "_")

func openState(dir, name string) (*state, error) {
	st := &state{path: filepath.Join(dir, "email-"+safeName.Replace(name)+".json"),
		tokens: map[string]token{}, records: map[string]record{}}
	b, err := os.ReadFile(st.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return st, nil
	case err != nil:
		return nil, fmt.Errorf("state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		return nil, fmt.Errorf("state: %s is not a state file this version knows", st.path)
	}
	for h, t := range f.Tokens {
		if len(h) == 64 && isLowerHex(h) {
			st.tokens[h] = t
		}
	}
	for id, r := range f.Records {
		st.records[id] = r
	}
	return st, nil
}

// saveLocked writes the state, dropping what has been dead for keepAfter.
func (s *state) saveLocked(now time.Time) error {
	for h, t := range s.tokens {
		if now.After(t.Expires.Add(keepAfter)) {
			delete(s.tokens, h)
		}
	}
	for id, r := range s.records {
		if now.After(r.Expires.Add(keepAfter)) {
			delete(s.records, id)
		}
	}
	b, err := json.Marshal(stateFile{Version: 1, Tokens: s.tokens, Records: s.records})
	if err != nil {
		return err
	}
	return writeFile(s.path, b)
}

// issue stores new tokens (by hash) and the approval's record, persisted
// before any link is sent.
func (s *state) issue(id string, rec record, toks map[string]token, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.records[id]; ok {
		rec.FollowedUp = old.FollowedUp
	}
	s.records[id] = rec
	for h, t := range toks {
		s.tokens[h] = t
	}
	if err := s.saveLocked(now); err != nil {
		for h := range toks {
			delete(s.tokens, h)
		}
		return err
	}
	return nil
}

// drop forgets tokens that were never sent.
func (s *state) drop(hashes []string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hashes {
		delete(s.tokens, h)
	}
	_ = s.saveLocked(now)
}

// Why a link does not decide.
var (
	errUnknown = errors.New("unknown link")
	errUsed    = errors.New("link already used")
	errExpired = errors.New("link expired")
	errClosed  = errors.New("approval no longer pending")
	errPersist = errors.New("state not persisted")
)

// peek returns the token's entry and its record if the link may still
// decide, without using it.
func (s *state) peek(hash string, now time.Time) (token, record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkLocked(hash, now)
}

func (s *state) checkLocked(hash string, now time.Time) (token, record, error) {
	t, ok := s.tokens[hash]
	if !ok {
		return token{}, record{}, errUnknown
	}
	r, ok := s.records[t.Approval]
	switch {
	case !ok:
		return t, record{}, errUnknown
	case t.Closed != "":
		return t, r, errClosed
	case t.Used:
		return t, r, errUsed
	case !now.Before(t.Expires):
		return t, r, errExpired
	}
	return t, r, nil
}

// take uses the token: it is marked used (persisted) before the decision
// is made, so a link decides at most once even across a restart.
func (s *state) take(hash string, now time.Time) (token, record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, r, err := s.checkLocked(hash, now)
	if err != nil {
		return t, r, err
	}
	t.Used = true
	s.tokens[hash] = t
	if err := s.saveLocked(now); err != nil {
		t.Used = false
		s.tokens[hash] = t
		return t, r, fmt.Errorf("%w: %v", errPersist, err)
	}
	return t, r, nil
}

// restore makes a used token usable again (the decision was not recorded).
func (s *state) restore(hash string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[hash]; ok {
		t.Used = false
		s.tokens[hash] = t
		_ = s.saveLocked(now)
	}
}

// spend uses all of one approver's links for one approval (they decided).
func (s *state) spend(id, approver string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, t := range s.tokens {
		if t.Approval == id && t.Approver == approver {
			t.Used = true
			s.tokens[h] = t
		}
	}
	_ = s.saveLocked(now)
}

// close ends every link of a decided approval and reports whether a
// follow-up for status is still to be sent (markFollowedUp records it).
func (s *state) close(id, status string, now time.Time) (followUp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, t := range s.tokens {
		if t.Approval == id {
			t.Closed = status
			s.tokens[h] = t
		}
	}
	_ = s.saveLocked(now)
	r, ok := s.records[id]
	return !ok || r.FollowedUp != status
}

func (s *state) markFollowedUp(id, status string, expires, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		r = record{Expires: expires}
	}
	if r.Expires.Before(now) {
		r.Expires = now
	}
	r.FollowedUp = status
	s.records[id] = r
	return s.saveLocked(now)
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
