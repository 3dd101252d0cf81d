package whatsapp

import (
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

// state is what the channel keeps in StateDir: when each approver last
// wrote (their 24-hour window) and the webhook message IDs seen recently
// (replays are refused across a restart too).
type state struct {
	path string

	mu      sync.Mutex
	inbound map[string]time.Time // wa_id → their last message
	seen    map[string]time.Time // message ID → its timestamp
}

type stateFile struct {
	Version int                  `json:"version"`
	Inbound map[string]time.Time `json:"inbound"`
	Seen    map[string]time.Time `json:"seen"`
}

var safeName = strings.NewReplacer("/", "_", "\\", "_", "..", "_")

func openState(dir, name string) (*state, error) {
	st := &state{path: filepath.Join(dir, "whatsapp-"+safeName.Replace(name)+".json"),
		inbound: map[string]time.Time{}, seen: map[string]time.Time{}}
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
	for k, v := range f.Inbound {
		if waIDRe.MatchString(k) {
			st.inbound[k] = v
		}
	}
	for k, v := range f.Seen {
		if messageIDRe.MatchString(k) {
			st.seen[k] = v
		}
	}
	return st, nil
}

// windowOpen reports whether who wrote within window before now.
func (s *state) windowOpen(who string, now time.Time, window time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.inbound[who]
	return ok && now.Sub(at) < window
}

// record notes a verified inbound message: its sender's window and, for
// replay detection, its ID (kept for keep). It reports whether the ID is
// new. Nothing is saved here; call save.
func (s *state) record(who, id string, at, now time.Time, keep time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.seen {
		if now.Sub(t) > keep {
			delete(s.seen, k)
		}
	}
	if _, dup := s.seen[id]; dup {
		return false
	}
	s.seen[id] = at
	if at.After(now) {
		at = now
	}
	if at.After(s.inbound[who]) {
		s.inbound[who] = at
	}
	return true
}

// save writes the state atomically (mode 0600), dropping windows long
// closed.
func (s *state) save(now time.Time) error {
	s.mu.Lock()
	for k, t := range s.inbound {
		if now.Sub(t) > 2*serviceWindow {
			delete(s.inbound, k)
		}
	}
	defer s.mu.Unlock() // held while writing: saves never overtake each other
	b, err := json.Marshal(stateFile{Version: 1, Inbound: s.inbound, Seen: s.seen})
	if err != nil {
		return err
	}
	return writeFile(s.path, b)
}

// writeFile replaces p atomically with mode 0600.
func writeFile(p string, b []byte) error { return atomicfile.WriteFile(p, b, 0o600) }
