package main

// Red-team round 2 (docs/attacks/audit.md, "Round 2"): `clawd audit
// verify` with --head, rotation and standard input.

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/audit"
)

// rotatedPair writes a signed log, rotates it (Reopen) and writes more:
// the paths of audit.log.1, audit.log, the public key, and the head.
func rotatedPair(t *testing.T) (old, cur, pubPath, head string) {
	t.Helper()
	dir := t.TempDir()
	cur, old = filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.log.1")
	keyPath := filepath.Join(dir, "audit-key")
	key, _, err := audit.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pubPath = keyPath + ".pub"
	if _, err := os.Stat(pubPath); err != nil { // write it ourselves if the loader did not
		der, _ := x509.MarshalPKIXPublicKey(key.Public().(ed25519.PublicKey))
		os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	}
	l, err := audit.OpenWith(cur, audit.Options{Key: key, CheckpointEvery: 4, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		l.Log(audit.Entry{Event: "decision", Path: fmt.Sprint("/old/", i), Action: "deny"})
	}
	os.Rename(cur, old)
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		l.Log(audit.Entry{Event: "decision", Path: fmt.Sprint("/new/", i), Action: "deny"})
	}
	seq, hash := l.Head()
	l.Close()
	return old, cur, pubPath, fmt.Sprintf("%d:%s", seq, hash)
}

// withStdin runs f with os.Stdin reading b.
func withStdin(t *testing.T, b []byte, f func()) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stdin")
	os.WriteFile(p, b, 0o600)
	in, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	saved := os.Stdin
	os.Stdin = in
	defer func() { os.Stdin = saved }()
	f()
}

// HELD: `cat audit.log.1 audit.log | clawd audit verify --key K --head H -`
// verifies a genuine rotated pair; it fails when lines up to the head are
// cut off the current file, when audit.log.1's end is cut (the current
// file's first line no longer links), and when audit.log.1 alone is
// checked against the current file's head.
func TestAttackVerifyStdinRotatedWithHeadHeld(t *testing.T) {
	old, cur, pub, head := rotatedPair(t)
	a, _ := os.ReadFile(old)
	b, _ := os.ReadFile(cur)
	both := append(append([]byte(nil), a...), b...)
	var err error
	withStdin(t, both, func() { err = runVerify(t, "--key", pub, "--head", head, "-") })
	if err != nil {
		t.Fatalf("a genuine rotated pair with its head failed: %v", err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	for cut := 2; cut <= 4; cut++ { // the last line is Close's checkpoint, after the head
		short := append(append([]byte(nil), a...), strings.Join(lines[:len(lines)-1-cut], "")...)
		withStdin(t, short, func() { err = runVerify(t, "--key", pub, "--head", head, "-") })
		if err == nil {
			t.Fatalf("the pair with %d line(s) cut off the current file verified against the head", cut)
		}
	}
	// audit.log.1 with its last lines (the rotation checkpoint and a
	// decision) removed, then the current file: the link breaks.
	al := strings.SplitAfter(string(a), "\n")
	short := append([]byte(strings.Join(al[:len(al)-3], "")), b...)
	withStdin(t, short, func() { err = runVerify(t, "--key", pub, "--head", head, "-") })
	if err == nil {
		t.Fatal("a predecessor cut at its end verified with its successor")
	}
	// The head of the current file against audit.log.1 alone: refused.
	if err := runVerify(t, "--key", pub, "--head", head, old); err == nil {
		t.Fatal("audit.log.1 verified against the current file's head")
	}
}
