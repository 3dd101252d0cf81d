package approval

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The DB keeps approvals (pending and decided), grants and the link key.
// Headers and bodies in it are the redacted views, never raw requests.
var (
	bucketApprovals = []byte("approvals")
	bucketGrants    = []byte("grants")
	bucketMeta      = []byte("meta")
	keyLinkKey      = []byte("link_key")
)

// Store keeps approvals (pending and decided), grants and the link key
// across restarts: the bbolt file of Config.DBPath, or a store that other
// hosts share (Config.Store, the fleet package's). The Manager calls it
// under its lock, so an implementation must answer quickly or fail.
type Store interface {
	// LinkKey returns the HMAC key of signed links, creating it once.
	LinkKey() ([]byte, error)
	PutApproval(a *Approval) error // insert or replace by ID, with a.Refs
	// GetApproval returns an approval by ID, or ErrNotFound.
	GetApproval(id string) (*Approval, error)
	PutGrant(g *Grant) error
	DeleteGrant(id string) error
	// Recover, at start, marks the approvals this host left pending as
	// expired, drops old decided approvals and expired grants, and returns
	// the expired approvals and the live grants.
	Recover(now time.Time) (stale []*Approval, grants []*Grant, err error)
	// RecentDecided returns up to n ended approvals, newest first.
	RecentDecided(n int) ([]*Approval, error)
	Close() error
}

// Forwarder is a Store shared with other hosts: Forward passes a decision
// on an approval that another host holds to that host and returns its
// answer; ok is false when no other host holds it (the decision is then
// made here, on what the store says).
type Forwarder interface {
	Forward(ctx context.Context, d Decision) (r Result, ok bool)
}

// GrantLister is a Store shared with other hosts, whose grants change
// without this Manager: Grants returns the live grants of every host
// (SyncGrants makes them the Manager's).
type GrantLister interface {
	Grants() ([]*Grant, error)
}

// boltStore is the single-host Store: one bbolt file.
type boltStore struct{ db *bolt.DB }

// OpenBoltStore opens (creating) the bbolt store at path.
func OpenBoltStore(path string) (Store, error) {
	db, err := openStore(path)
	if err != nil {
		return nil, err
	}
	return boltStore{db}, nil
}

func (s boltStore) LinkKey() ([]byte, error)                 { return loadOrCreateLinkKey(s.db) }
func (s boltStore) PutApproval(a *Approval) error            { return putApproval(s.db, a) }
func (s boltStore) GetApproval(id string) (*Approval, error) { return getApproval(s.db, id) }
func (s boltStore) PutGrant(g *Grant) error                  { return putGrant(s.db, g) }
func (s boltStore) DeleteGrant(id string) error              { return deleteGrant(s.db, id) }
func (s boltStore) Recover(now time.Time) ([]*Approval, []*Grant, error) {
	return recoverStore(s.db, now)
}
func (s boltStore) RecentDecided(n int) ([]*Approval, error) { return recentDecided(s.db, n) }
func (s boltStore) Close() error                             { return s.db.Close() }

// keepDecided is how long decided approvals stay queryable in the DB.
const keepDecided = 7 * 24 * time.Hour

// record is the stored form of an Approval: Refs are kept for card updates
// after a restart but not shown by the API.
type record struct {
	*Approval
	Refs map[string]string `json:"refs,omitempty"`
}

func openStore(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open approval db %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketApprovals, bucketGrants, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init approval db: %w", err)
	}
	return db, nil
}

func loadOrCreateLinkKey(db *bolt.DB) ([]byte, error) {
	var key []byte
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if v := b.Get(keyLinkKey); len(v) >= 32 {
			key = append([]byte(nil), v...)
			return nil
		}
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		return b.Put(keyLinkKey, key)
	})
	if err != nil {
		return nil, fmt.Errorf("link key: %w", err)
	}
	return key, nil
}

func putApproval(db *bolt.DB, a *Approval) error {
	v, err := json.Marshal(record{Approval: a, Refs: a.Refs})
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketApprovals).Put([]byte(a.ID), v)
	})
}

func decodeApproval(v []byte) (*Approval, error) {
	var r record
	r.Approval = &Approval{}
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, err
	}
	r.Approval.Refs = r.Refs
	return r.Approval, nil
}

func getApproval(db *bolt.DB, id string) (*Approval, error) {
	var a *Approval
	err := db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketApprovals).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		var err error
		a, err = decodeApproval(v)
		return err
	})
	if err != nil {
		if err == ErrNotFound {
			return nil, err
		}
		return nil, fmt.Errorf("read approval %s: %w", id, err)
	}
	return a, nil
}

func putGrant(db *bolt.DB, g *Grant) error {
	v, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGrants).Put([]byte(g.ID), v)
	})
}

func deleteGrant(db *bolt.DB, id string) error {
	return db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGrants).Delete([]byte(id))
	})
}

// recoverStore marks approvals a previous run left pending as expired
// (their agents' connections are gone), drops old decided approvals and
// expired grants, and returns the expired approvals and live grants.
func recoverStore(db *bolt.DB, now time.Time) (stale []*Approval, grants []*Grant, err error) {
	err = db.Update(func(tx *bolt.Tx) error {
		ab := tx.Bucket(bucketApprovals)
		var drop [][]byte
		type upd struct {
			k []byte
			a *Approval
		}
		var ups []upd
		err := ab.ForEach(func(k, v []byte) error {
			a, err := decodeApproval(v)
			if err != nil {
				drop = append(drop, append([]byte(nil), k...))
				return nil
			}
			switch {
			case a.Status == Pending:
				a.Status = Expired
				a.Decided = now.UTC()
				a.Reason = "clawd restarted"
				ups = append(ups, upd{append([]byte(nil), k...), a})
			case now.Sub(a.Decided) > keepDecided:
				drop = append(drop, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, u := range ups {
			v, err := json.Marshal(record{Approval: u.a, Refs: u.a.Refs})
			if err != nil {
				return err
			}
			if err := ab.Put(u.k, v); err != nil {
				return err
			}
			stale = append(stale, u.a)
		}
		for _, k := range drop {
			if err := ab.Delete(k); err != nil {
				return err
			}
		}
		gb := tx.Bucket(bucketGrants)
		var gdrop [][]byte
		err = gb.ForEach(func(k, v []byte) error {
			var g Grant
			if json.Unmarshal(v, &g) != nil || !now.Before(g.Expires) {
				gdrop = append(gdrop, append([]byte(nil), k...))
				return nil
			}
			grants = append(grants, &g)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gdrop {
			if err := gb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("recover approval db: %w", err)
	}
	return stale, grants, nil
}

// recentDecided returns up to n approvals that ended, newest first.
func recentDecided(db *bolt.DB, n int) ([]*Approval, error) {
	var out []*Approval
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketApprovals).ForEach(func(_, v []byte) error {
			a, err := decodeApproval(v)
			if err != nil || a.Status == Pending {
				return nil
			}
			out = append(out, a)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Decided.After(out[j].Decided) })
	if len(out) > n {
		out = out[:n]
	}
	return out, err
}
