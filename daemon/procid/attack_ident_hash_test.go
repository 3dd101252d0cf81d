package procid

import (
	"os"
	"testing"
	"time"
)

// Red team, issue 16 round 2: one Resolver serves every attached
// container, and every connection's accept waits for its resolution.

// TestAttackResolveHeadOfLine: hashing is bounded by a process-wide
// semaphore (GOMAXPROCS/2, so 1 on a 2-core host) and a resolution waits
// for it without any deadline. An agent in container A that runs a fresh
// 512 MiB executable per connection (a chmod is enough to change its
// ctime, so the cache never helps) keeps the semaphore busy; container B's
// next uncached program (a new tool, or any program after the cache was
// flushed, see below) then waits behind A's hashes before its connection
// is even served. Here the semaphore is held as A's in-flight hashes hold
// it; B's resolution must still finish (or give up as unknown) within a
// bound.
func TestAttackResolveHeadOfLine(t *testing.T) {
	prog := helperCopy(t, t.TempDir(), "b-tool", "b")
	c := start(t, prog)
	r := resolver()
	// Container A's large hashes in flight.
	for i := 0; i < cap(hashing); i++ {
		hashing <- struct{}{}
	}
	released := false
	release := func() {
		if !released {
			released = true
			for i := 0; i < cap(hashing); i++ {
				<-hashing
			}
		}
	}
	defer release()
	done := make(chan error, 1)
	go func() {
		_, err := r.Resolve(c.pid, 7, BootNow(), nil)
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		release()
		<-done
		t.Fatal("container B's resolution waited more than 3 s behind another container's hashing (no deadline, shared semaphore)")
	}
}

// TestAttackResolveCacheFlushedByOneAgent: the digest cache is cleared
// whole when it reaches its cap, and a key includes ctime, which the agent
// changes with every chmod of its own file: one process can flush every
// other container's cached digests at will (4096 chmods), so their next
// connections are all hashed again (and wait, see above).
func TestAttackResolveCacheFlushedByOneAgent(t *testing.T) {
	dir := t.TempDir()
	victim := start(t, helperCopy(t, dir, "victim", "v"))
	agentProg := helperCopy(t, dir, "agent", "a")
	agent := start(t, agentProg)
	r := resolver()
	r.recent = 0
	r.maxCache = 16 // 4096 in production; the mechanism is the same
	if _, err := r.Resolve(victim.pid, 7, BootNow(), nil); err != nil {
		t.Fatal(err)
	}
	var victimKey fileKey
	for k := range r.cache {
		victimKey = k
	}
	for i := 0; i < r.maxCache; i++ {
		mode := os.FileMode(0o755)
		if i%2 == 0 {
			mode = 0o775
		}
		if err := os.Chmod(agentProg, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Resolve(agent.pid, 7, BootNow(), nil); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	_, ok := r.cache[victimKey]
	r.mu.Unlock()
	if !ok {
		t.Fatal("one agent's chmods of its own executable evicted another container's cached digest")
	}
}

// TestHashTurnPerContainer (fix of head-of-line): container A's hashes in
// flight (its turn taken) do not delay container B, whose resolution gets
// its digest though the wait bound is an hour.
func TestHashTurnPerContainer(t *testing.T) {
	prog := helperCopy(t, t.TempDir(), "b-tool", "b2")
	c := start(t, prog)
	r := New("/proc", func(int) (uint64, error) { return 8, nil })
	r.hashWait = time.Hour
	releaseA, err := r.hashTurn(7)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseA()
	p, err := r.Resolve(c.pid, 8, BootNow(), nil)
	if err != nil || !p.Known || p.SHA256 != sum(t, prog) {
		t.Fatalf("container B behind A's hash: %+v %v", p, err)
	}
}

// TestCacheEvictsTheHog: with the cache full, the container holding the
// most entries loses its least recently used one, never another
// container's; and a newer state of a file replaces its older entry.
func TestCacheEvictsTheHog(t *testing.T) {
	dir := t.TempDir()
	victim := start(t, helperCopy(t, dir, "victim", "v"))
	r := New("/proc", func(pid int) (uint64, error) {
		if pid == int(victim.pid) {
			return 1, nil
		}
		return 2, nil
	})
	r.recent, r.maxCache = 0, 4
	if _, err := r.Resolve(victim.pid, 1, BootNow(), nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		a := start(t, helperCopy(t, dir, "agent"+itoa(i), "a"+itoa(i)))
		if _, err := r.Resolve(a.pid, 2, BootNow(), nil); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) > 4 || r.perCgroup[1] != 1 {
		t.Fatalf("cache %d entries, victim's container %d (want 1)", len(r.cache), r.perCgroup[1])
	}
}
