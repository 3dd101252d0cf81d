package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

var (
	buildMu   sync.Mutex
	binPaths  = map[string]string{}
	buildErrs = map[string]error{}
)

// clawdBin builds the clawd binary once per test run.
func clawdBin(t testing.TB) string { return clawdBinTags(t, "") }

// clawdBinTags builds clawd with build tags once per test run.
func clawdBinTags(t testing.TB, tags string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if _, done := binPaths[tags]; !done {
		binPaths[tags], buildErrs[tags] = buildClawd(tags)
	}
	if err := buildErrs[tags]; err != nil {
		t.Fatal(err)
	}
	return binPaths[tags]
}

func buildClawd(tags string) (string, error) {
	dir, err := os.MkdirTemp("", "clawd-e2e-bin")
	if err != nil {
		return "", err
	}
	os.Chmod(dir, 0o755) // tests also run the CLI as an unprivileged user
	bin := filepath.Join(dir, "clawd")
	cmd := exec.Command("go", "build", "-tags", tags, "-o", bin, "../cmd/clawd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -tags %q: %v\n%s", tags, err, out)
	}
	return bin, nil
}

var (
	toolMu   sync.Mutex
	toolBins = map[string]string{}
)

// toolBin builds the static test program ./NAME (e2e/bypass, e2e/agent)
// once per test run; containers get it through RunOpts.Files.
func toolBin(t testing.TB, name string) string {
	t.Helper()
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolBins[name]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "clawd-e2e-"+name)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	p := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", p, "./"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	toolBins[name] = p
	return p
}

// agentBin is the static HTTP(S) client for containers (mount it at /agent).
func agentBin(t testing.TB) string { return toolBin(t, "agent") }

// AgentAnswer is what e2e/agent prints.
type AgentAnswer struct {
	Status  int                 `json:"status"`
	Proto   string              `json:"proto"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
	Error   string              `json:"error"`
	Cert    string              `json:"cert_issuer"`
}

// agent runs /agent in ct with args and decodes its answer.
func agent(t testing.TB, ct *harness.Container, args ...string) AgentAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, errOut, _, err := ct.Exec(ctx, append([]string{"/agent"}, args...)...)
	if err != nil {
		t.Fatalf("exec agent in %s: %v", ct.Name, err)
	}
	var a AgentAnswer
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("agent output %q (stderr %q): %v", out, errOut, err)
	}
	return a
}

// Clawd is a clawd daemon run as a subprocess with its own socket, state
// dir, pin root and listeners.
type Clawd struct {
	t        testing.TB
	Bin      string
	Dir      string
	Config   string
	Policy   string
	Socket   string
	StateDir string
	PinRoot  string
	LogPath  string
	Audit    string
	API      string
	Metrics  string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// ClawdOpts configure StartClawd.
type ClawdOpts struct {
	Policy     string // policy YAML; default allows everything
	DockerHost string
	Extra      string // more YAML for clawd.yaml
	// ExtraFunc, when set, gives more YAML once the daemon's addresses are
	// chosen (public-url: http://c.API, channel settings naming it).
	ExtraFunc func(c *Clawd) string
	Bin       string // the clawd binary to run; default clawdBin
}

const allowAll = `version: 1
default:
  default_action: allow
  rules: []
`

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// StartClawd starts a daemon talking to ctd and waits until it answers.
func StartClawd(t testing.TB, ctd *harness.Containerd, o ClawdOpts) *Clawd {
	t.Helper()
	harness.RequireRoot(t)
	dir, err := os.MkdirTemp("/tmp", "clawd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if o.Bin == "" {
		o.Bin = clawdBin(t)
	}
	c := &Clawd{
		t: t, Bin: o.Bin, Dir: dir,
		Config: filepath.Join(dir, "clawd.yaml"), Policy: filepath.Join(dir, "policy.yaml"),
		Socket: filepath.Join(dir, "clawd.sock"), StateDir: filepath.Join(dir, "state"),
		PinRoot: "/sys/fs/bpf/" + filepath.Base(dir), LogPath: filepath.Join(dir, "daemon.log"),
		Audit: filepath.Join(dir, "audit.log"), API: freePort(t), Metrics: freePort(t),
	}
	if o.Policy == "" {
		o.Policy = allowAll
	}
	if o.DockerHost == "" {
		o.DockerHost = "unix://" + filepath.Join(dir, "no-docker.sock")
	}
	c.WritePolicy(o.Policy)
	if o.ExtraFunc != nil {
		o.Extra += o.ExtraFunc(c)
	}
	cfg := fmt.Sprintf(`socket: %s
state-dir: %s
policy: %s
containerd-address: %s
docker-host: %s
pin-root: %s
api-listen: %s
metrics-listen: %s
audit-log: %s
log-level: debug
log-format: json
dns-upstreams: ["%s:53"]
sweep-interval: 1s
drain-timeout: 3s
peek-timeout: 300ms
%s`, c.Socket, c.StateDir, c.Policy, ctd.Address, o.DockerHost, c.PinRoot, c.API, c.Metrics, c.Audit, harness.UpstreamDNS, o.Extra)
	if err := os.WriteFile(c.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		// Detach whatever is left so no container of another test stays cut off.
		os.RemoveAll(c.PinRoot)
		if t.Failed() {
			b, _ := os.ReadFile(c.LogPath)
			t.Logf("daemon log (last 6000 bytes):\n%s", tail(string(b), 6000))
		}
		os.RemoveAll(dir)
	})
	c.Start()
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// WritePolicy replaces the policy file atomically (as editors do).
func (c *Clawd) WritePolicy(p string) {
	tmp := c.Policy + ".tmp"
	if err := os.WriteFile(tmp, []byte(p), 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, c.Policy); err != nil {
		c.t.Fatal(err)
	}
}

// Start runs the daemon and waits until its control socket answers.
func (c *Clawd) Start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	logf, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.Bin, "daemon", "--config", c.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	logf.Close()
	c.cmd = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := daemon.NewClient(c.Socket)
	for {
		if _, err := cl.Status(ctx); err == nil {
			// Keep reaping in the background.
			go func() { <-exited }()
			return
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(c.LogPath)
			c.t.Fatalf("clawd daemon exited at start: %v\n%s", err, tail(string(b), 4000))
		case <-ctx.Done():
			c.t.Fatal("clawd daemon did not answer within 30s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits for the process to go.
func (c *Clawd) Stop() { c.signal(syscall.SIGTERM) }

// Kill sends SIGKILL, as a crash would.
func (c *Clawd) Kill() { c.signal(syscall.SIGKILL) }

func (c *Clawd) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	p := c.cmd.Process
	p.Signal(sig)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := p.Signal(syscall.Signal(0)); err != nil {
			break
		}
		// A reaped or zombie process: check /proc state.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid)); err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.cmd = nil
}

// HUP sends SIGHUP to the daemon.
func (c *Clawd) HUP() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		c.cmd.Process.Signal(syscall.SIGHUP)
	}
}

// CLI runs the clawd command line against this daemon.
func (c *Clawd) CLI(args ...string) (string, error) {
	return c.CLIAs(nil, args...)
}

// CLIAs runs the CLI, optionally as another user.
func (c *Clawd) CLIAs(cred *syscall.Credential, args ...string) (string, error) {
	full := append([]string{"--socket", c.Socket}, args...)
	cmd := exec.Command(c.Bin, full...)
	cmd.Env = append(os.Environ(),
		"CLAWD_SECRETS_FILE="+filepath.Join(c.StateDir, "secrets.json"),
		"CLAWD_SECRETS_KEY="+filepath.Join(c.StateDir, "secrets.key"))
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustCLI runs the CLI and fails the test on error.
func (c *Clawd) MustCLI(args ...string) string {
	c.t.Helper()
	out, err := c.CLI(args...)
	if err != nil {
		c.t.Fatalf("clawd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Client is a control-socket client.
func (c *Clawd) Client() *daemon.Client { return daemon.NewClient(c.Socket) }

// List returns the attachments.
func (c *Clawd) List() []daemon.AttachmentInfo {
	c.t.Helper()
	l, err := c.Client().List(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return l
}

// AuditEntries reads the audit log.
func (c *Clawd) AuditEntries() []audit.Entry {
	c.t.Helper()
	f, err := os.Open(c.Audit)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []audit.Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			c.t.Errorf("audit line is not JSON: %q", sc.Text())
			continue
		}
		out = append(out, e)
	}
	return out
}

// LogLines returns the daemon's JSON log lines.
func (c *Clawd) LogLines() []map[string]any {
	b, _ := os.ReadFile(c.LogPath)
	var out []map[string]any
	for _, l := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// eventually polls cond until it holds or the bound passes. The bound is a
// safety net against hangs, not a timing assertion.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for: %s", what)
}

// sh runs a shell command in a container.
func sh(t testing.TB, ct *harness.Container, script string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, errOut, code, err := ct.Exec(ctx, "sh", "-c", script)
	if err != nil {
		t.Fatalf("exec in %s: %v", ct.Name, err)
	}
	return out + errOut, code
}

// wget fetches url from inside ct (busybox wget; its -T flag crashes the
// Debian build, so timeout bounds it).
func wget(t testing.TB, ct *harness.Container, url string) (string, int) {
	t.Helper()
	return sh(t, ct, "timeout 10 wget -q -O- '"+url+"' 2>&1")
}
