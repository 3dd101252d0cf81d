package usage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"
	"github.com/clawd-dev/clawd/policy"
)

// Key is one budget of one container: the container's policy.Container.Key
// and the budget's policy.Budget.ID ("set/rule").
type Key struct {
	Container string
	Budget    string
}

// window is what a container spent of one budget in its current window.
// Windows are fixed: one starts at the first request after the previous
// one ended and lasts the budget's Per.
type window struct {
	Name     string    `json:"name,omitempty"` // the container's human name (metrics, ls)
	Start    time.Time `json:"start"`
	Tokens   int64     `json:"tokens"`
	Requests int64     `json:"requests"`
	inflight int64     // admitted, not yet settled
	reserved int64     // the estimates of the requests in flight
}

// Usage is one row of `clawd ls` and one metrics series.
type Usage struct {
	Container    string    `json:"container"` // Key.Container
	Name         string    `json:"name,omitempty"`
	Budget       string    `json:"budget"` // "set/rule"
	Tokens       int64     `json:"tokens"`
	TokenLimit   int64     `json:"token_limit,omitempty"`
	Requests     int64     `json:"requests"`
	RequestLimit int64     `json:"request_limit,omitempty"`
	InFlight     int64     `json:"in_flight,omitempty"`
	Reserved     int64     `json:"reserved,omitempty"` // tokens reserved by the requests in flight
	Window       string    `json:"window"`
	WindowStart  time.Time `json:"window_start"`
	WindowResets time.Time `json:"window_resets"`
	Spent        bool      `json:"spent"`
}

// Ledger keeps usage per Key. Admission is exact for request counts (in
// flight requests count). Token counts are known only when an answer
// ends, so a request is admitted against its estimate (Estimate), which
// stays reserved while it runs: it is admitted only when what was spent,
// what the requests in flight reserved and its own estimate fit the
// limit, and settled to what it cost. Concurrent requests cannot together
// overshoot the limit by more than their estimates were short.
//
// What is persisted counts the requests in flight as spent (their
// reservations as tokens): a daemon that dies before they settle forgets
// nothing. A request settled after Close is written at once.
//
// It is safe for concurrent use.
type Ledger struct {
	mu        sync.Mutex
	closed    bool       // Close ran: changes are written at once
	saveMu    sync.Mutex // one save at a time, in order
	w         map[Key]*window
	spec      map[Key]*policy.Budget // the budget each window was last charged under
	nextPrune int
	last      time.Time // the latest clock reading seen (pruning on save)

	path    string
	dirty   chan struct{}
	stop    chan struct{}
	done    chan struct{}
	onError func(error)
}

type fileFormat struct {
	Version int          `json:"version"`
	Entries []fileWindow `json:"entries"`
}

type fileWindow struct {
	Container string `json:"container"`
	Budget    string `json:"budget"`
	PerNS     int64  `json:"per_ns"`
	// The limits the window was last charged under, so `clawd ls` shows
	// them after a restart before the next request.
	TokenLimit   int64 `json:"token_limit,omitempty"`
	RequestLimit int64 `json:"request_limit,omitempty"`
	window
}

// Open returns a Ledger persisted at path (written through
// internal/atomicfile shortly after every change and on Close); "" keeps
// it in memory. A missing file is an empty ledger; an unreadable or invalid
// one is an error: starting with spent budgets forgotten would fail open.
// onError (may be nil) hears of failed writes.
func Open(path string, onError func(error)) (*Ledger, error) {
	l := &Ledger{w: map[Key]*window{}, spec: map[Key]*policy.Budget{}, path: path, onError: onError, nextPrune: 1024}
	if path == "" {
		return l, nil
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("budget ledger: %w", err)
	default:
		var f fileFormat
		if err := json.Unmarshal(data, &f); err != nil || f.Version != 1 {
			return nil, fmt.Errorf("budget ledger %s is not a version 1 ledger (move it away to reset every budget): %v", path, err)
		}
		for _, e := range f.Entries {
			if e.Container == "" || e.Budget == "" || e.PerNS <= 0 || e.Tokens < 0 || e.Requests < 0 {
				return nil, fmt.Errorf("budget ledger %s: invalid entry for %q %q (move the file away to reset every budget)", path, e.Container, e.Budget)
			}
			k := Key{e.Container, e.Budget}
			w := e.window
			l.w[k] = &w
			l.spec[k] = &policy.Budget{ID: e.Budget, Per: time.Duration(e.PerNS), Tokens: e.TokenLimit, Requests: e.RequestLimit}
		}
	}
	l.dirty = make(chan struct{}, 1)
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	go l.writer()
	return l, nil
}

// flushDelay coalesces writes: a busy agent's requests cost one write per
// flushDelay, and a crash loses at most that much usage.
const flushDelay = 200 * time.Millisecond

func (l *Ledger) writer() {
	defer close(l.done)
	for {
		select {
		case <-l.dirty:
		case <-l.stop:
			l.save()
			return
		}
		select {
		case <-time.After(flushDelay):
		case <-l.stop:
		}
		l.save()
	}
}

func (l *Ledger) changed() {
	if l.dirty == nil {
		return
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		// Shutting down, or a request that outlived its proxy: the
		// writer is gone, and usage must not be lost with it.
		l.save()
		return
	}
	select {
	case l.dirty <- struct{}{}:
	default:
	}
}

// changedLocked is changed for a caller holding l.mu (deferred before
// its unlock: it runs after it).
func (l *Ledger) changedLocked() {
	l.mu.Unlock()
	l.changed()
	l.mu.Lock()
}

func (l *Ledger) save() {
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	l.mu.Lock()
	f := fileFormat{Version: 1, Entries: make([]fileWindow, 0, len(l.w))}
	l.prune(l.last)
	for k, w := range l.w {
		b := l.spec[k]
		fw := fileWindow{Container: k.Container, Budget: k.Budget, PerNS: int64(b.Per), TokenLimit: b.Tokens, RequestLimit: b.Requests, window: *w}
		// In flight counts as spent on disk (see Ledger).
		fw.Tokens = min(fw.Tokens+w.reserved, 1<<62)
		fw.Requests += w.inflight
		f.Entries = append(f.Entries, fw)
	}
	l.mu.Unlock()
	sort.Slice(f.Entries, func(i, j int) bool {
		a, b := f.Entries[i], f.Entries[j]
		return a.Container < b.Container || a.Container == b.Container && a.Budget < b.Budget
	})
	data, _ := json.MarshalIndent(f, "", "  ")
	if err := atomicfile.WriteFile(l.path, append(data, '\n'), 0o600); err != nil && l.onError != nil {
		l.onError(err)
	}
}

// Close writes the ledger a last time.
func (l *Ledger) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	return nil
}

// current returns k's window at now, starting a fresh one when the last
// ended. Called with l.mu held.
func (l *Ledger) current(k Key, b *policy.Budget, name string, now time.Time) *window {
	if now.After(l.last) {
		l.last = now
	}
	w := l.w[k]
	if w == nil && len(l.w) >= l.nextPrune {
		l.prune(now)
	}
	if w == nil || !now.Before(w.Start.Add(b.Per)) {
		var inflight, reserved int64
		if w != nil {
			inflight, reserved = w.inflight, w.reserved
		}
		w = &window{Start: now, inflight: inflight, reserved: reserved}
		l.w[k] = w
	}
	if name != "" {
		w.Name = name
	}
	l.spec[k] = b
	return w
}

// prune drops ended windows with nothing in flight: a fresh window holds
// the same state. Run when the map doubles, so it is amortized O(1).
// Called with l.mu held.
func (l *Ledger) prune(now time.Time) {
	for k, w := range l.w {
		if w.inflight == 0 && !now.Before(w.Start.Add(l.spec[k].Per)) {
			delete(l.w, k)
			delete(l.spec, k)
		}
	}
	l.nextPrune = 2*len(l.w) + 1024
}

// Refusal says why Admit refused a request.
type Refusal struct {
	// Busy: the budget is not spent, but the reservations of the requests
	// in flight leave no room for this one; it may fit once they settle.
	Busy bool
	// Retry is how long until the window ends (Busy: a short wait).
	Retry  time.Duration
	Reason string
}

// BusyRetry is how long a request refused for the reservations of others
// in flight is asked to wait.
const BusyRetry = 5 * time.Second

// Admit admits one request under budget b for k with its estimate est
// (tokens), reserving it; or says why not. An admitted request must be
// Settled once, with the same est.
func (l *Ledger) Admit(k Key, name string, b *policy.Budget, est int64, now time.Time) (ok bool, why Refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.current(k, b, name, now)
	retry := w.Start.Add(b.Per).Sub(now)
	window, resets := policy.FormatWindow(b.Per), retry.Round(time.Second)
	est = max(est, 0)
	spent := func(format string, a ...any) (bool, Refusal) {
		return false, Refusal{Retry: retry, Reason: fmt.Sprintf(format, a...)}
	}
	busy := func(format string, a ...any) (bool, Refusal) {
		return false, Refusal{Busy: true, Retry: min(BusyRetry, retry), Reason: fmt.Sprintf(format, a...)}
	}
	switch {
	case b.Tokens > 0 && w.Tokens >= b.Tokens:
		return spent("token budget of rule %q spent: %d of %d tokens used in this %s window; it resets in %s", ruleOf(b), w.Tokens, b.Tokens, window, resets)
	case b.Requests > 0 && w.Requests >= b.Requests:
		return spent("request budget of rule %q spent: %d of %d requests used in this %s window; it resets in %s", ruleOf(b), w.Requests, b.Requests, window, resets)
	case b.Requests > 0 && w.Requests+w.inflight >= b.Requests:
		return busy("request budget of rule %q: %d of %d requests used and %d in flight in this %s window", ruleOf(b), w.Requests, b.Requests, w.inflight, window)
	case b.Tokens > 0 && w.Tokens+est > b.Tokens:
		return spent("token budget of rule %q: this request may cost %d tokens (its estimate: the request body and its max_tokens), and %d of %d tokens remain in this %s window; ask for fewer tokens, or wait until it resets in %s", ruleOf(b), est, b.Tokens-w.Tokens, b.Tokens, window, resets)
	case b.Tokens > 0 && w.Tokens+w.reserved+est > b.Tokens:
		return busy("token budget of rule %q: this request may cost %d tokens, and of the %d of %d tokens that remain in this %s window, %d are reserved by %d requests in flight", ruleOf(b), est, b.Tokens-w.Tokens, b.Tokens, window, w.reserved, w.inflight)
	}
	w.inflight++
	w.reserved = min(w.reserved+est, 1<<62)
	// Persisted (as spent) soon, not only when something settles: a
	// daemon killed while the request runs keeps its reservation.
	defer l.changedLocked()
	return true, Refusal{}
}

// Enter admits a request whatever its window holds: a rule set in mode
// audit lets a request through that its spent budget would refuse, and its
// usage still counts, so the operator sees what the agent really spends.
// It reserves est and is settled like an admitted one.
func (l *Ledger) Enter(k Key, name string, b *policy.Budget, est int64, now time.Time) {
	l.mu.Lock()
	w := l.current(k, b, name, now)
	w.inflight++
	w.reserved = min(w.reserved+max(est, 0), 1<<62)
	l.mu.Unlock()
	l.changed()
}

func ruleOf(b *policy.Budget) string {
	for i := len(b.ID) - 1; i >= 0; i-- {
		if b.ID[i] == '/' {
			return b.ID[i+1:]
		}
	}
	return b.ID
}

// Settle ends an admitted request: est is what Admit reserved for it,
// forwarded says it reached the upstream (it then counts as a request),
// tokens is what it cost. They are charged to the window current at now.
func (l *Ledger) Settle(k Key, b *policy.Budget, est int64, forwarded bool, tokens int64, now time.Time) {
	l.mu.Lock()
	w := l.current(k, b, "", now)
	if w.inflight > 0 {
		w.inflight--
	}
	w.reserved = max(w.reserved-max(est, 0), 0)
	if w.inflight == 0 {
		w.reserved = 0
	}
	if forwarded {
		w.Requests++
	}
	w.Tokens = min(w.Tokens+max(tokens, 0), 1<<62)
	l.mu.Unlock()
	l.changed()
}

// Usage lists the live windows (of one container when container is not
// ""), sorted by container and budget.
func (l *Ledger) Usage(container string, now time.Time) []Usage {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Usage
	for k, w := range l.w {
		if container != "" && k.Container != container {
			continue
		}
		b := l.spec[k]
		end := w.Start.Add(b.Per)
		if !now.Before(end) && w.inflight == 0 {
			continue
		}
		out = append(out, Usage{
			Container: k.Container, Name: w.Name, Budget: k.Budget,
			Tokens: w.Tokens, TokenLimit: b.Tokens, Requests: w.Requests, RequestLimit: b.Requests, InFlight: w.inflight, Reserved: w.reserved,
			Window: policy.FormatWindow(b.Per), WindowStart: w.Start, WindowResets: end,
			Spent: b.Tokens > 0 && w.Tokens >= b.Tokens || b.Requests > 0 && w.Requests >= b.Requests,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Container < out[j].Container || out[i].Container == out[j].Container && out[i].Budget < out[j].Budget
	})
	return out
}
