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
	PID        int              `json:"pid"`
	StartTime  uint64           `json:"start_time"` // of PID, so a reused PID is not mistaken for the container
	Cgroup     string           `json:"cgroup"`
	CgroupID   uint64           `json:"cgroup_id"`
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

// procStartTime reads field 22 of /proc/PID/stat (start time in clock ticks).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: split after
	// the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	var v uint64
	_, err = fmt.Sscan(f[19], &v)
	return v, err
}
