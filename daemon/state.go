package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/internal/atomicfile"
	"github.com/clawd-dev/clawd/policy"
)

// Record is what the state dir keeps of one attachment: enough to re-adopt
// it after a restart without asking the container runtime.
type Record struct {
	ID         string           `json:"id"`
	Container  policy.Container `json:"container"`
	PID        int              `json:"pid"`             // the process attach named; informational only
	Cgroup     string           `json:"cgroup"`          // the attachment lives as long as this cgroup
	CgroupID   uint64           `json:"cgroup_id"`       // its inode: a new cgroup at the same path is another one
	Netns      uint64           `json:"netns,omitempty"` // inode of the container's network namespace
	AttachedAt time.Time        `json:"attached_at"`
	Layers     enforce.Layers   `json:"layers"`
	Auto       bool             `json:"auto,omitempty"` // attached by label
}

// stateStore keeps one JSON file per attachment, written atomically.
type stateStore struct{ dir string }

func newStateStore(stateDir string) (*stateStore, error) {
	dir := filepath.Join(stateDir, "attachments")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	return &stateStore{dir: dir}, nil
}

func (s *stateStore) path(id string) string { return filepath.Join(s.dir, id+".json") }

func (s *stateStore) Save(r Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.path(r.ID), b, 0o600)
}

func (s *stateStore) Remove(id string) error {
	err := os.Remove(s.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Load returns every record; unreadable files are reported, not fatal.
func (s *stateStore) Load() ([]Record, []error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{err}
	}
	var out []Record
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil || r.ID+".json" != e.Name() {
			errs = append(errs, fmt.Errorf("state file %s is corrupt: %v", e.Name(), err))
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errs
}
