package linear

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// record is what clawd posted for one approval: the digest of the request
// the card showed and where the cards are. A command comment is bound to
// this digest, never to anything the comment says.
type record struct {
	Digest string `json:"digest"`
	// Until is when the record may be forgotten: a day after the later of
	// the approval's expiry and the last post or update.
	Until time.Time `json:"until"`
	Cards []post    `json:"cards"`
	// Comments are the comments that already carried a command for this
	// approval: each is acted on once, also after a restart (the delivery
	// id is not signed, and the replay memory is not kept).
	Comments []string `json:"comments,omitempty"`
}

// firstComment records that comment carried a command for approval id and
// reports whether it is the first time; unknown approvals are not ours.
func (s *store) firstComment(id, comment string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs[id]
	if r == nil {
		return true // not one of our cards: decide refuses it anyway
	}
	for _, c := range r.Comments {
		if c == comment {
			return false
		}
	}
	r.Comments = append(r.Comments, comment)
	s.saveLocked()
	return true
}

type post struct {
	Issue   string `json:"issue"`
	Comment string `json:"comment"`
}

// keep is how long a record outlives its approval's expiry, so a late
// command still gets the core's answer ("already decided"); at most
// maxRecords are kept, of at most maxCards cards each.
const (
	keep       = 24 * time.Hour
	maxRecords = 10000
	maxCards   = 10
)

// store keeps records in memory and, when the channel has a state
// directory, in linear-NAME.json there (0600, replaced atomically).
type store struct {
	mu   sync.Mutex
	path string
	now  func() time.Time
	log  *zap.Logger
	recs map[string]*record
}

func openStore(dir, name string, now func() time.Time, log *zap.Logger) *store {
	s := &store{now: now, log: log, recs: map[string]*record{}}
	if dir == "" {
		log.Warn("linear: no state directory: posted cards are remembered in memory only")
		return s
	}
	s.path = filepath.Join(dir, "linear-"+name+".json")
	data, err := os.ReadFile(s.path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		log.Warn("linear: cannot read the state file; starting empty", zap.Error(err))
	default:
		if err := json.Unmarshal(data, &s.recs); err != nil || s.recs == nil {
			log.Warn("linear: the state file is not valid; starting empty")
			s.recs = map[string]*record{}
		}
	}
	return s
}

// posted remembers that a card for a is the comment id on issue ("" =
// being posted).
func (s *store) posted(a *approval.Approval, issue, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs[a.ID]
	if r == nil {
		r = &record{}
		s.recs[a.ID] = r
	}
	if a.Digest != "" {
		r.Digest = a.Digest
	}
	r.Until = s.now()
	if a.Expires.After(r.Until) {
		r.Until = a.Expires
	}
	r.Until = r.Until.Add(keep)
	p := post{Issue: issue, Comment: id}
	found := false
	for i, c := range r.Cards {
		if c.Issue == issue && c.Comment == "" {
			r.Cards[i].Comment = id // the pending entry gets its comment
			found = true
			break
		}
		found = found || c == p
	}
	if !found {
		r.Cards = append(r.Cards, p)
		if len(r.Cards) > maxCards {
			r.Cards = r.Cards[len(r.Cards)-maxCards:]
		}
	}
	s.pruneLocked()
	s.saveLocked()
}

// lookup returns the digest of approval id if a card for it is on issue.
func (s *store) lookup(id, issue string) (digest string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs[id]
	if r == nil || r.Digest == "" {
		return "", false
	}
	for _, c := range r.Cards {
		if c.Issue == issue {
			return r.Digest, true
		}
	}
	return "", false
}

func (s *store) pruneLocked() {
	now := s.now()
	for id, r := range s.recs {
		if now.After(r.Until) {
			delete(s.recs, id)
		}
	}
	for len(s.recs) > maxRecords { // drop the oldest
		var oldest string
		for id, r := range s.recs {
			if oldest == "" || r.Until.Before(s.recs[oldest].Until) {
				oldest = id
			}
		}
		delete(s.recs, oldest)
	}
}

func (s *store) saveLocked() {
	if s.path == "" {
		return
	}
	data, err := json.Marshal(s.recs)
	if err != nil {
		return
	}
	if err := atomicfile.WriteFile(s.path, data, 0o600); err != nil {
		s.log.Warn("linear: cannot write the state file", zap.Error(err))
	}
}

// seen remembers webhook delivery ids until the timestamp window they
// could be replayed in has passed.
type seen struct {
	mu  sync.Mutex
	ids map[string]time.Time // id -> forget after
}

func newSeen() *seen { return &seen{ids: map[string]time.Time{}} }

// add reports whether none of keys was seen (and then remembers them all
// until until).
func (s *seen) add(keys []string, now, until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.ids {
		if now.After(t) {
			delete(s.ids, k)
		}
	}
	for _, k := range keys {
		if _, ok := s.ids[k]; ok {
			return false
		}
	}
	for _, k := range keys {
		s.ids[k] = until
	}
	return true
}

// forget drops keys again.
func (s *seen) forget(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.ids, k)
	}
}
