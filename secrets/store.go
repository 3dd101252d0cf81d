package secrets

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/internal/hostname"
)

var (
	// ErrNotFound is returned (wrapped) for a name that is not in the store.
	ErrNotFound = errors.New("secret not found")
	// ErrTampered is returned (wrapped) when the store file fails its
	// integrity checks: a flipped bit, swapped or removed records, or the
	// wrong key.
	ErrTampered = errors.New("secret store integrity check failed (tampered file or wrong key)")
)

const (
	fileVersion = 1
	keyLen      = 32
	aadPrefix   = "clawd-secrets-record-v1\x00"
	macPrefix   = "clawd-secrets-file-v1\x00"
)

// Store holds the secrets, encrypted at rest in one JSON file and decrypted
// in memory. It is safe for concurrent use: Inject and friends read an
// immutable snapshot, so a Rotate or Reload never blocks or tears a request.
//
// Several processes may share the file (the daemon and `clawd secret`
// commands): writers take an flock on "<path>.lock" and re-read the file
// before changing it, and the daemon picks up their changes with Reload
// (or Watch, which calls Reload when the file is replaced).
type Store struct {
	path    string
	keyPath string
	aead    cipher.AEAD
	macKey  []byte

	mu   sync.Mutex // serializes writers and Reload
	snap atomic.Pointer[state]

	now func() time.Time
	// beforeRename, when set (tests), runs after the temp file is written
	// and can fail the write, simulating a crash or full disk.
	beforeRename func() error

	metrics *metrics
}

// state is one immutable decrypted generation of the store.
type state struct {
	entries []*entry // sorted by name
	inject  []*entry // the entries that are not Clawd: the only ones Inject sees
	byName  map[string]*entry
	scrub   *matcher // every value -> its placeholder
	redact  *matcher // every value and placeholder -> [REDACTED:name]
}

type entry struct {
	meta   Secret
	value  []byte // never mutated in place: rotation makes a new entry
	pathRE *regexp.Regexp
}

// Open loads (or starts) the store at path, decrypting with the key in
// keyPath. A missing key file is created with 32 random bytes (hex, mode
// 0600); a missing store file is an empty store, written on the first Set.
// keyPath "" means "secrets.key" next to path. Point keyPath at
// $CREDENTIALS_DIRECTORY/... to have systemd supply the key.
func Open(path, keyPath string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open secret store: empty path")
	}
	if keyPath == "" {
		keyPath = filepath.Join(filepath.Dir(path), "secrets.key")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	// A store without its key can't be read, and a fresh key would make
	// the next write replace it: refuse instead of generating one.
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return nil, fmt.Errorf("open secret store: key file %s is missing but store %s exists; restore the key or move the store away", keyPath, path)
		}
	}
	key, err := loadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	defer clear(key)
	encKey, err := hkdf.Key(sha256.New, key, nil, "clawd secrets aead v1", keyLen)
	if err != nil {
		return nil, fmt.Errorf("open secret store: derive key: %w", err)
	}
	defer clear(encKey)
	macKey, err := hkdf.Key(sha256.New, key, nil, "clawd secrets file mac v1", keyLen)
	if err != nil {
		return nil, fmt.Errorf("open secret store: derive key: %w", err)
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("open secret store: %w", err)
	}
	s := &Store{path: path, keyPath: keyPath, aead: aead, macKey: macKey, now: time.Now}
	st, err := s.load()
	if err != nil {
		return nil, fmt.Errorf("open secret store %s: %w", path, err)
	}
	s.snap.Store(st)
	return s, nil
}

// loadKey reads a 32-byte key (raw, or 64 hex digits with an optional
// trailing newline), creating it if missing.
func loadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKey(path); err != nil {
			return nil, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer clear(b)
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("key file %s is accessible to others (mode %#o); chmod 600 it", path, fi.Mode().Perm())
	}
	if len(b) == keyLen {
		return bytes.Clone(b), nil
	}
	h := bytes.TrimSpace(b)
	if len(h) == 2*keyLen {
		key := make([]byte, keyLen)
		if _, err := hex.Decode(key, h); err == nil {
			return key, nil
		}
		clear(key)
	}
	return nil, fmt.Errorf("key file %s: want 32 raw bytes or 64 hex digits, got %d bytes", path, len(b))
}

// createKey writes a fresh key atomically: a crash leaves either no key or
// a whole one, and when two processes race, the first link wins and both
// use it.
func createKey(path string) error {
	key := make([]byte, keyLen)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	enc := make([]byte, 2*keyLen+1)
	defer clear(enc)
	hex.Encode(enc, key)
	enc[len(enc)-1] = '\n'
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	f, err := os.CreateTemp(dir, ".secrets-key-*")
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("create key: %w", err)
	}
	if _, err := f.Write(enc); err != nil {
		f.Close()
		return fmt.Errorf("create key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("create key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create key: %w", err)
	}
	return syncDir(dir)
}

// On disk:
type fileFormat struct {
	Version int          `json:"version"`
	Secrets []fileRecord `json:"secrets"`
	// MAC covers every record in order, so removing, duplicating or
	// reordering records is detected, not only editing one.
	MAC []byte `json:"mac"`
}

type fileRecord struct {
	Meta       Secret `json:"meta"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// aad binds a ciphertext to its metadata (name, hosts, placeholder, ...),
// so records or values can't be swapped and hosts can't be widened.
func aad(meta Secret) ([]byte, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	return append([]byte(aadPrefix), b...), nil
}

func (s *Store) fileMAC(recs []fileRecord) ([]byte, error) {
	h := hmac.New(sha256.New, s.macKey)
	h.Write([]byte(macPrefix))
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	binary.BigEndian.PutUint64(n[:], uint64(len(recs)))
	h.Write(n[:])
	for _, r := range recs {
		a, err := aad(r.Meta)
		if err != nil {
			return nil, err
		}
		field(a)
		field(r.Nonce)
		field(r.Ciphertext)
	}
	return h.Sum(nil), nil
}

// load reads, verifies and decrypts the file. Any failure leaves nothing
// behind; callers keep their current state.
func (s *Store) load() (*state, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(nil)
	}
	if err != nil {
		return nil, fmt.Errorf("read store: %w", err)
	}
	var f fileFormat
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse store: %w (%w)", err, ErrTampered)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("store file version %d, want %d", f.Version, fileVersion)
	}
	mac, err := s.fileMAC(f.Secrets)
	if err != nil {
		return nil, fmt.Errorf("verify store: %w", err)
	}
	if !hmac.Equal(mac, f.MAC) {
		return nil, fmt.Errorf("verify store: file MAC mismatch: %w", ErrTampered)
	}
	var entries []*entry
	fail := func(err error) (*state, error) {
		for _, e := range entries {
			clear(e.value)
		}
		return nil, err
	}
	for i, r := range f.Secrets {
		a, err := aad(r.Meta)
		if err != nil {
			return fail(fmt.Errorf("record %d: %w", i, err))
		}
		if len(r.Nonce) != s.aead.NonceSize() {
			return fail(fmt.Errorf("record %d (%q): bad nonce length: %w", i, r.Meta.Name, ErrTampered))
		}
		v, err := s.aead.Open(nil, r.Nonce, r.Ciphertext, a)
		if err != nil {
			return fail(fmt.Errorf("record %d (%q): decrypt: %w", i, r.Meta.Name, ErrTampered))
		}
		e, err := newEntry(r.Meta, v)
		if err != nil {
			clear(v)
			return fail(fmt.Errorf("record %d: %w", i, err))
		}
		entries = append(entries, e)
	}
	st, err := newState(entries)
	if err != nil {
		return fail(err)
	}
	return st, nil
}

func newEntry(meta Secret, value []byte) (*entry, error) {
	if err := ValidName(meta.Name); err != nil {
		return nil, err
	}
	if meta.Clawd {
		if meta.Placeholder != "" || len(meta.Hosts) > 0 || meta.Header != "" || meta.HeaderMode ||
			len(meta.Paths) > 0 || meta.PathRegex != "" || meta.Query || meta.Body || len(meta.Env) > 0 {
			return nil, fmt.Errorf("secret %s: a clawd secret with injection settings", meta.Name)
		}
	} else if !validPlaceholder(meta.Name, meta.Placeholder) {
		return nil, fmt.Errorf("secret %s: malformed placeholder", meta.Name)
	}
	e := &entry{meta: meta, value: value}
	if meta.PathRegex != "" {
		re, err := compilePathRegex(meta.PathRegex)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", meta.Name, err)
		}
		e.pathRE = re
	}
	return e, nil
}

func newState(entries []*entry) (*state, error) {
	slices.SortFunc(entries, func(a, b *entry) int { return strings.Compare(a.meta.Name, b.meta.Name) })
	st := &state{entries: entries, byName: make(map[string]*entry, len(entries))}
	var scrub, redact []pair
	phs := make(map[string]bool)
	for _, e := range entries {
		if st.byName[e.meta.Name] != nil {
			return nil, fmt.Errorf("secret %s appears twice", e.meta.Name)
		}
		st.byName[e.meta.Name] = e
		tag := []byte("[REDACTED:" + e.meta.Name + "]")
		if e.meta.Clawd {
			// Never in an agent's request, so never in a response to
			// scrub; redacted wherever clawd writes text.
			redact = append(redact, pair{old: e.value, new: tag})
			redact = append(redact, escapedForms(e.value, tag)...)
			continue
		}
		st.inject = append(st.inject, e)
		if phs[e.meta.Placeholder] {
			return nil, fmt.Errorf("secret %s: placeholder reused", e.meta.Name)
		}
		phs[e.meta.Placeholder] = true
		ph := []byte(e.meta.Placeholder)
		scrub = append(scrub, pair{old: e.value, new: ph})
		redact = append(redact, pair{old: e.value, new: tag}, pair{old: ph, new: tag})
		redact = append(redact, escapedForms(e.value, tag)...)
	}
	st.scrub = newMatcher(scrub)
	st.redact = newMatcher(redact)
	return st, nil
}

// escapedForms are the ways v is written inside JSON text (and inside a
// JSON string holding JSON: arguments of a tool call, a body in a log), each
// differing from v: escaped as encoding/json and JSON.stringify write it,
// with and without HTML escapes, once and twice. Redacting only the raw
// value would leave a secret holding " or \ on a card, merely escaped.
func escapedForms(v, tag []byte) []pair {
	var out []pair
	seen := map[string]bool{string(v): true}
	add := func(b []byte) {
		if !seen[string(b)] {
			seen[string(b)] = true
			out = append(out, pair{old: b, new: tag})
		}
	}
	esc := func(b []byte, html bool) []byte {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(html)
		enc.Encode(string(b))
		return bytes.TrimSuffix(bytes.TrimPrefix(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte(`"`)), []byte(`"`))
	}
	for _, html := range []bool{false, true} {
		once := esc(v, html)
		add(once)
		add(esc(once, html))
	}
	return out
}

// toRecords encrypts entries for writing. Unchanged entries are
// re-encrypted too, with fresh nonces; that is cheap and keeps one code path.
func (s *Store) toRecords(entries []*entry) ([]fileRecord, error) {
	recs := make([]fileRecord, 0, len(entries))
	for _, e := range entries {
		a, err := aad(e.meta)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, s.aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("nonce: %w", err)
		}
		recs = append(recs, fileRecord{Meta: e.meta, Nonce: nonce, Ciphertext: s.aead.Seal(nil, nonce, e.value, a)})
	}
	return recs, nil
}

// write persists entries crash-safely: temp file in the same directory,
// fsync, rename over the store, fsync the directory. A failure at any step
// leaves the old file as it was and no temp file behind.
func (s *Store) write(entries []*entry) error {
	recs, err := s.toRecords(entries)
	if err != nil {
		return err
	}
	mac, err := s.fileMAC(recs)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(fileFormat{Version: fileVersion, Secrets: recs, MAC: mac}, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	if s.beforeRename != nil {
		if err := s.beforeRename(); err != nil {
			return fmt.Errorf("write store: %w", err)
		}
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write store: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// update runs fn on the current on-disk state under both the in-process
// and the cross-process lock, writes the result and swaps it in. If any
// step fails nothing changes, on disk or in memory.
func (s *Store) update(fn func(cur *state) ([]*entry, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lf, err := os.OpenFile(s.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock store: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock store: %w", err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	// Another process may have written since we last loaded.
	cur, err := s.load()
	if err != nil {
		return err
	}
	entries, err := fn(cur)
	if err != nil {
		return err
	}
	st, err := newState(entries)
	if err != nil {
		return err
	}
	if err := s.write(entries); err != nil {
		return err
	}
	s.snap.Store(st)
	s.metrics.setLoaded(len(entries))
	return nil
}

// Set creates the secret or replaces its settings and value. On create it
// generates the placeholder; on replace it keeps the placeholder and
// Created (the agent's copy stays valid) and sets Rotated. Placeholder,
// Created and Rotated in spec are ignored. value is copied; the caller may
// wipe it afterwards.
func (s *Store) Set(spec Secret, value []byte) (Secret, error) {
	meta, err := spec.normalize()
	if err != nil {
		return Secret{}, fmt.Errorf("set secret: %w", err)
	}
	if err := validValue(value); err != nil {
		return Secret{}, fmt.Errorf("set secret %s: %w", meta.Name, err)
	}
	var out Secret
	err = s.update(func(cur *state) ([]*entry, error) {
		now := s.now().UTC()
		meta.Created, meta.Rotated = now, time.Time{}
		old := cur.byName[meta.Name]
		if old != nil {
			meta.Created, meta.Rotated = old.meta.Created, now
		}
		switch {
		case meta.Clawd:
			// No placeholder: nothing an agent holds names it.
		case old != nil && old.meta.Placeholder != "":
			meta.Placeholder = old.meta.Placeholder
		default:
			ph, err := newPlaceholder(meta.Name)
			if err != nil {
				return nil, err
			}
			meta.Placeholder = ph
		}
		e, err := newEntry(meta, bytes.Clone(value))
		if err != nil {
			return nil, err
		}
		out = meta
		return replaceEntry(cur.entries, e), nil
	})
	if err != nil {
		return Secret{}, fmt.Errorf("set secret %s: %w", meta.Name, err)
	}
	return out, nil
}

// Rotate changes the value of an existing secret and keeps everything else,
// in particular the placeholder: running agents need no change.
func (s *Store) Rotate(name string, value []byte) (Secret, error) {
	if err := ValidName(name); err != nil {
		return Secret{}, fmt.Errorf("rotate secret: %w", err)
	}
	if err := validValue(value); err != nil {
		return Secret{}, fmt.Errorf("rotate secret %s: %w", name, err)
	}
	var out Secret
	err := s.update(func(cur *state) ([]*entry, error) {
		old := cur.byName[name]
		if old == nil {
			return nil, ErrNotFound
		}
		meta := old.meta
		meta.Rotated = s.now().UTC()
		e, err := newEntry(meta, bytes.Clone(value))
		if err != nil {
			return nil, err
		}
		out = meta
		return replaceEntry(cur.entries, e), nil
	})
	if err != nil {
		return Secret{}, fmt.Errorf("rotate secret %s: %w", name, err)
	}
	return out, nil
}

// Remove deletes a secret. Its placeholder becomes an ordinary string.
func (s *Store) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("remove secret: %w", err)
	}
	err := s.update(func(cur *state) ([]*entry, error) {
		if cur.byName[name] == nil {
			return nil, ErrNotFound
		}
		var out []*entry
		for _, e := range cur.entries {
			if e.meta.Name != name {
				out = append(out, e)
			}
		}
		return out, nil
	})
	if err != nil {
		return fmt.Errorf("remove secret %s: %w", name, err)
	}
	return nil
}

func replaceEntry(entries []*entry, e *entry) []*entry {
	out := make([]*entry, 0, len(entries)+1)
	for _, x := range entries {
		if x.meta.Name != e.meta.Name {
			out = append(out, x)
		}
	}
	return append(out, e)
}

func newPlaceholder(name string) (string, error) {
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("placeholder: %w", err)
	}
	return placeholderPrefix + name + "-" + hex.EncodeToString(r[:]), nil
}

// List returns every secret's metadata, sorted by name.
func (s *Store) List() []Secret {
	st := s.snap.Load()
	out := make([]Secret, 0, len(st.entries))
	for _, e := range st.entries {
		out = append(out, cloneMeta(e.meta))
	}
	return out
}

// Get returns one secret's metadata.
func (s *Store) Get(name string) (Secret, bool) {
	e := s.snap.Load().byName[name]
	if e == nil {
		return Secret{}, false
	}
	return cloneMeta(e.meta), true
}

func cloneMeta(m Secret) Secret {
	m.Hosts = slices.Clone(m.Hosts)
	m.RemoveHeaders = slices.Clone(m.RemoveHeaders)
	m.Paths = slices.Clone(m.Paths)
	m.Env = slices.Clone(m.Env)
	return m
}

// Credential returns the value of a clawd-owned secret (Secret.Clawd), for
// clawd's own use: an upstream proxy's "user:password", an approval
// channel's token. A secret meant for agents' requests is refused, so a
// policy or settings file cannot make clawd send an agent's key anywhere
// else. The error names the secret, never its value.
func (s *Store) Credential(name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", fmt.Errorf("credential: %w", err)
	}
	e := s.snap.Load().byName[name]
	if e == nil {
		return "", fmt.Errorf("credential %s: %w (set it with `clawd secret set %s --clawd`)", name, ErrNotFound, name)
	}
	if !e.meta.Clawd {
		return "", fmt.Errorf("credential %s: the secret is injected into agents' requests, not a clawd secret; store clawd's credential with `clawd secret set NAME --clawd`", name)
	}
	return string(e.value), nil
}

// BoundTo reports whether some secret may be sent to host (port and case
// ignored).
func (s *Store) BoundTo(host string) bool {
	host = hostname.Normalize(host)
	for _, e := range s.snap.Load().inject {
		if e.meta.boundTo(host) {
			return true
		}
	}
	return false
}

// ScansBody reports whether Inject reads the body of a request to host:
// whenever any secret is stored, since a placeholder of a secret not bound
// to host is misuse wherever it appears (and bound secrets with Body set
// are replaced there). The proxy decodes compressed bodies for Inject only
// then.
func (s *Store) ScansBody(host string) bool {
	return len(s.snap.Load().inject) > 0
}

// Reload re-reads the store file. If the file is unreadable or fails its
// integrity checks, the last good secrets stay in use and the error is
// returned. The daemon calls it on SIGHUP or from Watch.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.load()
	if err != nil {
		s.metrics.reloadFailed()
		return fmt.Errorf("reload secret store %s: %w", s.path, err)
	}
	s.snap.Store(st)
	s.metrics.setLoaded(len(st.entries))
	return nil
}

// Watch calls Reload whenever the store file is created, written, replaced
// or removed, until ctx is done. It watches the directory, because writers
// replace the file by rename. Reload errors are logged (log may be nil)
// and the last good copy stays in use. It returns nil when ctx ends, or an
// error if the watch can't be set up.
func (s *Store) Watch(ctx context.Context, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch secret store: %w", err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("watch secret store: %w", err)
	}
	base := filepath.Base(s.path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Base(ev.Name) != base {
				continue
			}
			if err := s.Reload(); err != nil {
				log.Error("secret store reload failed; keeping last good secrets", zap.Error(err))
			} else {
				log.Info("secret store reloaded", zap.Int("secrets", len(s.snap.Load().entries)))
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("secret store watch error", zap.Error(err))
		}
	}
}

// Close wipes the values held in memory. Call it at shutdown only, after
// the proxy stopped: injections still in flight would send wiped bytes.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.snap.Load()
	for _, e := range st.entries {
		clear(e.value)
	}
	empty, _ := newState(nil)
	s.snap.Store(empty)
	clear(s.macKey)
	return nil
}

// metrics are optional; a nil *metrics does nothing.
type metrics struct {
	loaded       prometheus.Gauge
	reloadErrors prometheus.Counter
	injections   *prometheus.CounterVec
	misuse       *prometheus.CounterVec
}

// Instrument registers the store's metrics on reg (nil: do nothing):
// clawd_secrets_loaded, clawd_secrets_reload_errors_total,
// clawd_secrets_injections_total{secret} and
// clawd_secrets_misuse_total{secret}. Labels are names, never values.
// Call it once, before serving.
func (s *Store) Instrument(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	m := &metrics{
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_secrets_loaded", Help: "Secrets currently loaded in memory.",
		}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clawd_secrets_reload_errors_total", Help: "Store reloads that failed (last good copy kept).",
		}),
		injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_secrets_injections_total", Help: "Requests a secret was injected into.",
		}, []string{"secret"}),
		misuse: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_secrets_misuse_total", Help: "Requests refused for carrying a placeholder to a host or path it is not bound to.",
		}, []string{"secret"}),
	}
	for _, c := range []prometheus.Collector{m.loaded, m.reloadErrors, m.injections, m.misuse} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register secrets metrics: %w", err)
		}
	}
	m.loaded.Set(float64(len(s.snap.Load().entries)))
	s.metrics = m
	return nil
}

func (m *metrics) setLoaded(n int) {
	if m != nil {
		m.loaded.Set(float64(n))
	}
}

func (m *metrics) reloadFailed() {
	if m != nil {
		m.reloadErrors.Inc()
	}
}

func (m *metrics) injected(names []string) {
	if m != nil {
		for _, n := range names {
			m.injections.WithLabelValues(n).Inc()
		}
	}
}

func (m *metrics) misused(name string) {
	if m != nil {
		m.misuse.WithLabelValues(name).Inc()
	}
}
