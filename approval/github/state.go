package github

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"
)

// state is what the channel remembers, in memory and (with a StateDir) in a
// file: the cards it posted (so a command is checked against the issue the
// card is on and decided with the digest clawd showed, never one taken from
// a comment), the webhook deliveries it has handled (GitHub redelivers with
// the same X-GitHub-Delivery for three days), and its own login.
type state struct {
	Self       string               `json:"self,omitempty"` // lowercased login of the token's user
	Cards      map[string]*record   `json:"cards"`
	Deliveries map[string]time.Time `json:"deliveries"`
}

// record is one approval's cards on GitHub.
type record struct {
	Digest  string     `json:"digest"`
	Grants  bool       `json:"grants"`
	Expires time.Time  `json:"expires"`
	At      []location `json:"at"`
}

// location is one posted card comment.
type location struct {
	Repo    string `json:"repo"` // owner/repo as configured
	Issue   int    `json:"issue"`
	Comment int64  `json:"comment"`
}

const (
	// deliveryTTL: GitHub lets a delivery be redelivered for three days.
	deliveryTTL  = 4 * 24 * time.Hour
	maxDelivered = 100000
	// recordTTL is how long a card is remembered after it expires, to
	// answer late commands.
	recordTTL = 7 * 24 * time.Hour
)

var fileRE = regexp.MustCompile(`[^a-z0-9_-]`)

func statePath(dir, name string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, "github-"+fileRE.ReplaceAllString(name, "_")+".json")
}

// load reads the state file; a missing file is an empty state.
func loadState(path string) (*state, error) {
	st := &state{Cards: map[string]*record{}, Deliveries: map[string]time.Time{}}
	if path == "" {
		return st, nil
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	if st.Cards == nil {
		st.Cards = map[string]*record{}
	}
	if st.Deliveries == nil {
		st.Deliveries = map[string]time.Time{}
	}
	return st, nil
}

// prune forgets old deliveries and cards.
func (st *state) prune(now time.Time) {
	for k, at := range st.Deliveries {
		if now.Sub(at) > deliveryTTL {
			delete(st.Deliveries, k)
		}
	}
	for k, r := range st.Cards {
		if now.Sub(r.Expires) > recordTTL {
			delete(st.Cards, k)
		}
	}
}

// save writes the state atomically (0600: it holds no secret, but it is
// clawd's own).
func (st *state) save(path string) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
