package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	db := s.CreateDB(t)
	s.SQL(t, db, "CREATE TABLE x (v int); INSERT INTO x VALUES (42)")
	if got := s.SQL(t, db, "SELECT v FROM x"); got != "42" {
		t.Fatalf("select = %q, want 42", got)
	}
	// Password authentication is really required: a wrong one is refused.
	cmd := exec.Command(filepath.Join(s.bin, "psql"), "-X", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", User, "-d", db, "-c", "SELECT 1")
	cmd.Env = append(os.Environ(), "PGPASSWORD=wrong")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("psql with a wrong password succeeded: %s", out)
	}
	s.Stop()
	if _, err := s.psql(db, "SELECT 1"); err == nil {
		t.Fatal("query succeeded on a stopped server")
	}
	s.Restart()
	if got := s.SQL(t, db, "SELECT v FROM x"); got != "42" {
		t.Fatalf("after restart select = %q, want 42", got)
	}
	// As root the server runs as an unprivileged user (postgres refuses root).
	if os.Geteuid() == 0 {
		fi, err := os.Stat(s.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Fatalf("data dir owned by root")
		}
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	var root string
	t.Run("server", func(t *testing.T) {
		s := Start(t)
		root = s.root
	})
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("%s left behind after the test: %v", root, err)
	}
}
