package daemon

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/policy"
)

func newFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
	Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "clawd.yaml")
	os.WriteFile(cfgPath, []byte("state-dir: /from/file\npolicy: /file/policy.yaml\napi-listen: 127.0.0.1:9000\napproval:\n  slack:\n    approvers: [U1]\n"), 0o600)

	t.Setenv("CLAWD_POLICY", "/env/policy.yaml")
	c, err := LoadConfig(newFlags(t, "--config", cfgPath, "--api-listen", "127.0.0.1:9100"))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/from/file" {
		t.Errorf("state-dir = %q, want the file's", c.StateDir)
	}
	if c.Policy != "/env/policy.yaml" {
		t.Errorf("policy = %q, want the environment's", c.Policy)
	}
	if c.APIListen != "127.0.0.1:9100" {
		t.Errorf("api-listen = %q, want the flag's", c.APIListen)
	}
	if c.AuditLog != "/from/file/audit.log" || c.SecretsFile != "/from/file/secrets.json" {
		t.Errorf("derived paths: audit %q secrets %q", c.AuditLog, c.SecretsFile)
	}
	if len(c.Approval.Slack.Approvers) != 1 || c.Socket != DefaultSocket {
		t.Errorf("config = %+v", c)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("api-listen: [not, a, string\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing explicit config", []string{"--config", filepath.Join(dir, "nope.yaml")}, "read config"},
		{"broken yaml", []string{"--config", bad}, "read config"},
		{"bad api address", []string{"--config", filepath.Join(dir, "absent-default.yaml"), "--api-listen", "nowhere"}, "read config"},
		{"bad metrics address", []string{"--metrics-listen", "x:y"}, "metrics-listen"},
		{"empty socket", []string{"--socket", ""}, "socket must not be empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--config") {
				empty := filepath.Join(dir, "empty.yaml")
				os.WriteFile(empty, []byte("log-level: info\n"), 0o600)
				args = append([]string{"--config", empty}, args...)
			}
			fs := newFlags(t, args...)
			_, err := LoadConfig(fs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAttachmentIDIsBPFFSSafe(t *testing.T) {
	for _, tc := range []struct {
		c    policy.Container
		want string
	}{
		{policy.Container{Runtime: "containerd", Namespace: "default", ID: "agent-1"}, "containerd_default_agent-1"},
		{policy.Container{Runtime: "docker", Namespace: "moby", ID: "abc.def"}, "docker_moby_abc_def"},
		{policy.Container{Runtime: "pid", ID: "pid-42"}, "pid_pid-42"},
		{policy.Container{Runtime: "containerd", Namespace: "k8s.io", ID: "../../x"}, "containerd_k8s_io_______x"},
	} {
		if got := attachmentID(tc.c); got != tc.want {
			t.Errorf("attachmentID(%+v) = %q, want %q", tc.c, got, tc.want)
		}
	}
}

func TestStateStoreRoundTripAndCorruption(t *testing.T) {
	s, err := newStateStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := Record{ID: "containerd_default_a", Container: policy.Container{Name: "a"}, PID: 7, AttachedAt: time.Unix(100, 0).UTC()}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.dir, "broken.json"), []byte("{"), 0o600)
	recs, errs := s.Load()
	if len(recs) != 1 || recs[0].ID != r.ID || recs[0].PID != 7 || !recs[0].AttachedAt.Equal(r.AttachedAt) {
		t.Fatalf("records = %+v", recs)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "corrupt") {
		t.Fatalf("errors = %v", errs)
	}
	if st, _ := os.Stat(s.path(r.ID)); st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", st.Mode().Perm())
	}
	if err := s.Remove(r.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(r.ID); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	// No temp files are left behind.
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

func TestForbiddenCoversEveryLocalAddressForWildcards(t *testing.T) {
	got, err := forbiddenAddrs("0.0.0.0:8787", "127.0.0.1:9787", "")
	if err != nil {
		t.Fatal(err)
	}
	has := func(s string) bool {
		for _, a := range got {
			if a == netip.MustParseAddrPort(s) {
				return true
			}
		}
		return false
	}
	for _, want := range []string{"0.0.0.0:8787", "127.0.0.1:8787", "127.0.0.1:9787"} {
		if !has(want) {
			t.Errorf("forbidden list %v lacks %s", got, want)
		}
	}
}

func TestFormatListAndStatus(t *testing.T) {
	var b bytes.Buffer
	now := time.Now()
	FormatList(&b, []AttachmentInfo{{Record: Record{Container: policy.Container{Name: "agent", Runtime: "docker", Namespace: "moby"}, Cgroup: "/sys/fs/cgroup/x", AttachedAt: now.Add(-time.Minute)}}}, now)
	out := b.String()
	for _, want := range []string{"CONTAINER", "agent", "docker", "moby", "/sys/fs/cgroup/x", "1m0s ago", "cgroup"} {
		if !strings.Contains(out, want) {
			t.Errorf("ls table lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	FormatStatus(&b, Status{Version: "v1", PolicyError: "policy.yaml:3: bad", Runtimes: []string{"containerd"}})
	if !strings.Contains(b.String(), "policy.yaml:3: bad") || !strings.Contains(b.String(), "previous policy stays in force") {
		t.Errorf("status:\n%s", b.String())
	}
}

func TestClientExplainsUnreachableDaemon(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Fatalf("err = %v", err)
	}
}

// The control socket answers a non-root peer with 403 and never hands the
// connection to the handler.
func TestControlSocketRefusesNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to act as another user")
	}
	dir, err := os.MkdirTemp("", "clawd-ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666) // as if an operator loosened it by hand
	called := make(chan bool, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called <- true; w.Write([]byte("{}")) })}
	go srv.Serve(&rootOnly{Listener: ln})
	defer srv.Close()

	// Connect from a thread whose credentials are nobody's (setresuid on one
	// thread only; the saved uid 0 lets it switch back).
	conn := make(chan net.Conn, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 65534, 65534, 0); e != 0 {
			conn <- nil
			return
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			conn <- nil
			return
		}
		conn <- c
	}()
	c := <-conn
	if c == nil {
		t.Fatal("could not connect as nobody")
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/detach HTTP/1.1\r\nHost: clawd\r\nContent-Length: 2\r\n\r\n{}")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(string(body), "only root") {
		t.Fatalf("non-root peer got %d %s", resp.StatusCode, body)
	}
	select {
	case <-called:
		t.Fatal("the handler ran for a non-root peer")
	default:
	}
	// Root gets through.
	if _, err := NewClient(path).Status(context.Background()); err != nil {
		t.Fatalf("root client: %v", err)
	}
	if len(called) != 1 {
		t.Fatal("root's request did not reach the handler")
	}
}

func TestDoctorOnThisHost(t *testing.T) {
	cs := Doctor(context.Background(), Config{PinRoot: DefaultPinRoot, ContainerdAddress: "/nonexistent.sock", DockerHost: "unix:///nonexistent2.sock", Socket: "/nonexistent3.sock"})
	byName := map[string]Check{}
	for _, c := range cs {
		byName[c.Name] = c
	}
	// This host has everything clawd needs in the kernel.
	for _, n := range []string{"root", "kernel", "btf", "cgroup2", "net_cls/net_prio", "bpf programs"} {
		if c := byName[n]; !c.OK {
			t.Errorf("check %s failed on this host: %+v", n, c)
		}
	}
	// With no runtime reachable, both runtime checks fail and say how to fix.
	if c := byName["containerd"]; c.OK || c.Warn || c.Fix == "" {
		t.Errorf("containerd check = %+v", c)
	}
	var b bytes.Buffer
	if bad := FormatChecks(&b, cs); bad < 2 || !strings.Contains(b.String(), "[FAIL] containerd") {
		t.Errorf("FormatChecks = %d:\n%s", bad, b.String())
	}
}

func TestDNSRefuseSetting(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{{"", 3, true}, {"nxdomain", 3, true}, {"REFUSED", 5, true}, {"servfail", 0, false}} {
		got, err := Config{DNSRefuse: tc.in}.dnsRcode()
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("dns-refuse %q = %d, %v", tc.in, got, err)
		}
	}
}

// The standard library's logger (net/http writes upstream bytes there)
// reaches no output once a daemon is made.
func TestStdLogSilenced(t *testing.T) {
	old := stdlog.Writer()
	defer stdlog.SetOutput(old)
	stdlog.SetOutput(os.Stderr)
	silenceStdLog()
	if stdlog.Writer() != io.Discard {
		t.Fatalf("standard log writes to %T", stdlog.Writer())
	}
}
