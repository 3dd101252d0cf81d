package daemon

import (
	"os"
	"sync"
	"testing"
	"time"
)

func TestConnLimitAdmitsUpToMax(t *testing.T) {
	var l connLimit
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.admit(10) {
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if admitted != 10 {
		t.Fatalf("admitted %d of 100 with a limit of 10", admitted)
	}
	if l.admit(10) {
		t.Fatal("admitted over the limit")
	}
	l.release()
	if !l.admit(10) {
		t.Fatal("a released slot was not reusable")
	}
	if l.admit(10) {
		t.Fatal("admitted over the limit after reuse")
	}
	var u connLimit
	for i := 0; i < 5000; i++ {
		if !u.admit(0) {
			t.Fatal("limit 0 must mean unlimited")
		}
	}
}

func TestConnLimitWarnsOncePerInterval(t *testing.T) {
	var l connLimit
	now := time.Unix(1000, 0)
	if !l.shouldWarn(now, 10*time.Second) {
		t.Fatal("first refusal not logged")
	}
	if l.shouldWarn(now.Add(time.Second), 10*time.Second) {
		t.Fatal("logged twice within the interval")
	}
	if !l.shouldWarn(now.Add(11*time.Second), 10*time.Second) {
		t.Fatal("not logged after the interval")
	}
}

func TestConfigMaxConnsPerContainer(t *testing.T) {
	c := Config{Socket: "s", StateDir: "d", Policy: "p", PinRoot: "r", APIListen: "127.0.0.1:1", MaxConnsPerContainer: -1}
	if err := c.validate(); err == nil {
		t.Fatal("a negative max-conns-per-container was accepted")
	}
	c.MaxConnsPerContainer = 0
	if err := c.validate(); err != nil {
		t.Fatalf("0 (unlimited) refused: %v", err)
	}
}

func TestConfigMaxConnsDefaultAndFile(t *testing.T) {
	dir := t.TempDir()
	cfgPath := dir + "/clawd.yaml"
	c, err := LoadConfig(newFlags(t, "--config", cfgPath+".missing-is-an-error", "--state-dir", dir))
	if err == nil {
		t.Fatalf("explicit missing config accepted: %+v", c)
	}
	if err := os.WriteFile(cfgPath, []byte("max-conns-per-container: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = LoadConfig(newFlags(t, "--config", cfgPath)); err != nil || c.MaxConnsPerContainer != 7 {
		t.Fatalf("from file: %d %v", c.MaxConnsPerContainer, err)
	}
	if err := os.WriteFile(cfgPath, []byte("state-dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = LoadConfig(newFlags(t, "--config", cfgPath)); err != nil || c.MaxConnsPerContainer != DefaultMaxConnsPerContainer {
		t.Fatalf("default: %d %v", c.MaxConnsPerContainer, err)
	}
}
