package harness

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// agentRootRecipe builds the real-client agent root; see agentroot.sh.
//
//go:embed agentroot.sh
var agentRootRecipe []byte

// AgentRootCache is where built agent roots are kept between runs, one
// directory per recipe hash. CLAWD_E2E_CACHE overrides it.
const AgentRootCache = "/var/cache/clawd-e2e"

// agentRootTimeout bounds one build (mmdebstrap plus npm on a loaded
// 2-core machine takes about 3 minutes).
const agentRootTimeout = 20 * time.Minute

var (
	agentRootOnce sync.Once
	agentRootDir  string
	agentRootErr  error
	agentRootInfo string
)

// AgentRootKey is the cache key of the current recipe: the first 16 hex
// digits of its sha256.
func AgentRootKey() string {
	sum := sha256.Sum256(agentRootRecipe)
	return hex.EncodeToString(sum[:])[:16]
}

// AgentRoot returns the Debian agent root of agentroot.sh (Debian's curl,
// python3-requests, python3-httpx and nodejs; the official Node LTS build
// at /usr/local/bin/node-official; the Anthropic and OpenAI SDKs and
// Claude Code under /opt/agent; /usr/local/bin/claude). It is built once
// per recipe and cached under AgentRootCache; treat it as read-only:
// RunOpts.Rootfs gives each container an overlay over it.
func AgentRoot(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	agentRootOnce.Do(func() {
		agentRootDir, agentRootInfo, agentRootErr = ensureAgentRoot(t.Logf)
	})
	if agentRootErr != nil {
		t.Fatal(agentRootErr)
	}
	return agentRootDir
}

// PrepareAgentRoot builds (or finds in the cache) the agent root outside a
// test, so `make test` can build it before the suite's timeout starts
// (e2e/mkagentroot). It returns the directory and how it came to be.
func PrepareAgentRoot(logf func(string, ...any)) (string, string, error) {
	return ensureAgentRoot(logf)
}

// AgentRootInfo says whether the agent root came from the cache or was
// built now, and how long that took.
func AgentRootInfo() string { return agentRootInfo }

func ensureAgentRoot(logf func(string, ...any)) (string, string, error) {
	cache := AgentRootCache
	if c := os.Getenv("CLAWD_E2E_CACHE"); c != "" {
		cache = c
	}
	dir := filepath.Join(cache, "agent-root-"+AgentRootKey())
	done := func() bool { _, err := os.Stat(filepath.Join(dir, ".clawd-e2e-complete")); return err == nil }
	if done() {
		now := time.Now()
		os.Chtimes(dir, now, now) // in use: see the clean-up below
		return dir, "agent root " + dir + " (cached)", nil
	}
	for _, tool := range []string{"mmdebstrap", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", "", fmt.Errorf("agent root: %s not found (scripts/deps.sh installs it)", tool)
		}
	}
	// One build per host at a time; whoever waited finds it done.
	lock, err := lockWait("agent-root", agentRootTimeout+time.Minute, logf)
	if err != nil {
		return "", "", fmt.Errorf("agent root: %w", err)
	}
	defer lock.Close()
	if done() {
		return dir, "agent root " + dir + " (cached, built by another process)", nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", "", fmt.Errorf("agent root: %w", err)
	}
	// Interrupted builds go (builds hold the lock, so none is running), and
	// so do roots of other recipes unused for a day: a test process of
	// another checkout may still be running containers on a fresher one.
	old, _ := filepath.Glob(filepath.Join(cache, "agent-root-*"))
	for _, o := range old {
		fi, err := os.Stat(o)
		if o == dir || err != nil {
			continue
		}
		if strings.HasSuffix(o, ".build") || time.Since(fi.ModTime()) > 24*time.Hour {
			os.RemoveAll(o)
		}
	}
	os.RemoveAll(dir)
	tmp := dir + ".build"
	os.RemoveAll(tmp)
	recipe := filepath.Join(cache, "agentroot-"+AgentRootKey()+".sh")
	if err := os.WriteFile(recipe, agentRootRecipe, 0o755); err != nil {
		return "", "", fmt.Errorf("agent root: %w", err)
	}
	defer os.Remove(recipe)
	logf("building the agent root %s (mmdebstrap + npm; cached afterwards)", dir)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), agentRootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", recipe, tmp)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return "", "", fmt.Errorf("agent root: %s: %v\n%s", recipe, err, tail(out, 4000))
	}
	took := time.Since(began).Truncate(time.Second)
	if err := os.WriteFile(filepath.Join(tmp, ".clawd-e2e-complete"), []byte(took.String()+"\n"), 0o644); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", "", fmt.Errorf("agent root: %w", err)
	}
	return dir, fmt.Sprintf("agent root %s (built now in %s)", dir, took), nil
}
