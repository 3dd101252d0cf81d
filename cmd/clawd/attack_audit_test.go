package main

// Red-team regression tests (docs/attacks/audit.md).

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// forgedLog writes a chain that anyone who can write the file can compute
// (no checkpoint, nothing signed).
func forgedLog(t *testing.T) string {
	t.Helper()
	lines := []string{`{"time":"2026-01-01T00:00:00Z","event":"decision","action":"allow","bytes_in":0,"bytes_out":0,"duration_ms":0,"seq":1}`}
	for i := 2; i <= 5; i++ {
		sum := sha256.Sum256([]byte(lines[len(lines)-1]))
		lines = append(lines, fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","event":"decision","action":"allow","bytes_in":0,"bytes_out":0,"duration_ms":0,"seq":%d,"prev":"%x"}`, i, sum))
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runVerify(t *testing.T, args ...string) error {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "no-daemon.sock")
	c := auditCmd()
	c.SetArgs(append([]string{"verify"}, args...))
	c.SetOut(os.Stderr)
	return c.Execute()
}

// HOLE (medium): `clawd audit verify FILE` without --key uses the
// state dir's audit-key.pub; when that file is missing (deleted by whoever
// rewrote the log, or verifying on another host) it falls back to
// checking the chain only, prints a note on stderr and exits 0, on a log
// with not one signature. Failing open: the signatures are the only thing
// a rewriter cannot recompute.
func TestAttackVerifyWithoutDefaultKeyFailsOpen(t *testing.T) {
	if _, err := os.Stat("/var/lib/clawd/audit-key.pub"); err == nil {
		t.Fatal("this host has a daemon key: the test needs it absent")
	}
	if err := runVerify(t, forgedLog(t)); err == nil {
		t.Fatal("a chain without any signed checkpoint verified (exit 0) because the default key file is missing")
	}
}

// HELD: an explicit --key that is missing, or a key that signed nothing in
// the file, fails.
func TestAttackVerifyExplicitKeyHeld(t *testing.T) {
	path := forgedLog(t)
	if err := runVerify(t, "--key", filepath.Join(t.TempDir(), "missing.pub"), path); err == nil {
		t.Fatal("a missing --key verified")
	}
	if err := runVerify(t, "--head", "3:"+strings.Repeat("0", 64), path); err == nil {
		t.Fatal("a wrong --head verified")
	}
}
