package harness

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// Without clawd, a container reaches the upstream directly over IPv4, IPv6,
// UDP and DNS: the baseline every clawd test changes.
func TestContainerReachesUpstream(t *testing.T) {
	RequireRoot(t)
	up := SharedUpstream(t)
	ctd := SharedContainerd(t)
	ct := ctd.Run(t, "reach", RunOpts{Labels: map[string]string{"clawd.attach": "true"}})
	if ct.PID <= 0 || ct.Netns == "" || !ct.IPv4.IsValid() || !ct.IPv6.IsValid() {
		t.Fatalf("container not filled in: %+v", ct)
	}
	up.Reset()

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"http v4", []string{"wget", "-q", "-O", "-", "http://198.51.100.10:8080/v4?x=1"}, `"path":"/v4?x=1"`},
		{"http v6", []string{"wget", "-q", "-O", "-", "http://[2001:db8::10]:8080/v6"}, `"path":"/v6"`},
		{"http by name", []string{"wget", "-q", "-O", "-", "http://api.upstream.test:8080/name"}, `"host":"api.upstream.test:8080"`},
		{"tcp echo", []string{"sh", "-c", "echo ping-tcp | nc -w 2 198.51.100.10 9000"}, "ping-tcp"},
		{"dns", []string{"nslookup", "upstream.test", "198.51.100.53"}, "198.51.100.10"},
		{"dns over v6", []string{"nslookup", "-type=aaaa", "x.upstream.test", "2001:db8::53"}, "2001:db8::10"},
		{"wget -T works", []string{"wget", "-q", "-T", "5", "-O", "-", "http://198.51.100.10:8080/t"}, `"path":"/t"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, errOut, code, err := ct.Exec(ctx, tc.args...)
			if err != nil || code != 0 || !strings.Contains(out, tc.want) {
				t.Fatalf("%v: code %d err %v\nstdout: %s\nstderr: %s\nwant %q", tc.args, code, err, out, errOut, tc.want)
			}
		})
	}
	// UDP: busybox has no UDP netcat; tftp's request carries the file name.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ct.Exec(ctx, "timeout", "1", "tftp", "-g", "-r", "ping-udp", "-l", "/tmp/x", "198.51.100.10", "9001")
	ct.Exec(ctx, "timeout", "1", "tftp", "-g", "-r", "ping-udp6", "-l", "/tmp/x", "2001:db8::10", "9001")
	if p := strings.Join(up.UDPPackets(), "|"); !strings.Contains(p, "ping-udp") || !strings.Contains(p, "ping-udp6") {
		t.Errorf("UDP echo got %q, want packets with ping-udp and ping-udp6", p)
	}
	reqs := up.Requests()
	if len(reqs) != 4 {
		t.Fatalf("upstream saw %d requests, want 4: %+v", len(reqs), reqs)
	}
	if !strings.HasPrefix(reqs[0].Remote, ct.IPv4.String()+":") {
		t.Errorf("request came from %s, want the container address %s", reqs[0].Remote, ct.IPv4)
	}
	if len(up.DNSQueries()) == 0 {
		t.Error("upstream DNS saw no query")
	}
}

func TestExecReportsExitCodeAndStderr(t *testing.T) {
	RequireRoot(t)
	ct := SharedContainerd(t).Run(t, "exit", RunOpts{Network: "none"})
	out, errOut, code, err := ct.Exec(context.Background(), "sh", "-c", "echo out; echo err >&2; exit 3")
	if err != nil || code != 3 || out != "out\n" || errOut != "err\n" {
		t.Fatalf("got out %q err %q code %d error %v", out, errOut, code, err)
	}
	// A background child keeps the output pipes open; Exec still returns.
	out, _, code, err = ct.Exec(context.Background(), "sh", "-c", "(sleep 30 &) ; echo started")
	if err != nil || code != 0 || out != "started\n" {
		t.Fatalf("exec with a background child: %q %d %v", out, code, err)
	}
	// Network "none": only loopback, so the upstream is unreachable.
	_, _, code, err = ct.Exec(context.Background(), "wget", "-q", "-T", "2", "-O", "-", "http://198.51.100.10:8080/")
	if err != nil || code == 0 {
		t.Fatalf("wget without network: code %d err %v, want failure", code, err)
	}
}

func TestFilesAndCaps(t *testing.T) {
	RequireRoot(t)
	f := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(f, []byte("hello-ca"), 0o644); err != nil {
		t.Fatal(err)
	}
	ct := SharedContainerd(t).Run(t, "files", RunOpts{Network: "none", Files: map[string]string{f: "/etc/ssl/certs/ca.pem"}, Caps: []string{"CAP_NET_ADMIN"}})
	out, _, code, err := ct.Exec(context.Background(), "cat", "/etc/ssl/certs/ca.pem")
	if err != nil || code != 0 || out != "hello-ca" {
		t.Fatalf("cat: %q %d %v", out, code, err)
	}
	// CAP_NET_ADMIN lets the container change its own links.
	_, errOut, code, err := ct.Exec(context.Background(), "ip", "link", "set", "lo", "mtu", "1500")
	if err != nil || code != 0 {
		t.Fatalf("ip link set with CAP_NET_ADMIN: %d %v %s", code, err, errOut)
	}
}

func TestStopRemovesEverything(t *testing.T) {
	RequireRoot(t)
	ct := SharedContainerd(t).Run(t, "stop", RunOpts{})
	ct.Stop(t)
	ct.Stop(t) // idempotent
	if _, err := os.Stat(ct.Netns); !os.IsNotExist(err) {
		t.Errorf("netns %s still exists: %v", ct.Netns, err)
	}
	if _, err := net.InterfaceByName(ct.HostVeth); err == nil {
		t.Errorf("host veth %s still exists", ct.HostVeth)
	}
	if _, _, _, err := ct.Exec(context.Background(), "true"); err == nil {
		t.Error("exec in a stopped container succeeded")
	}
}

func TestRestartKeepsTasks(t *testing.T) {
	RequireRoot(t)
	ctd := StartContainerd(t)
	ct := ctd.Run(t, "restart", RunOpts{Network: "none"})
	ctd.Restart(t)
	out, _, code, err := ctd.runExecAfterRestart(ct)
	if err != nil || code != 0 || out != "alive\n" {
		t.Fatalf("exec after restart: %q %d %v", out, code, err)
	}
}

func (c *Containerd) runExecAfterRestart(ct *Container) (string, string, int, error) {
	return ct.Exec(context.Background(), "echo", "alive")
}

func TestUpstreamServesJSON(t *testing.T) {
	RequireRoot(t)
	up := SharedUpstream(t)
	up.Reset()
	c, err := DialIn(up.Netns, "tcp", "198.51.100.10:8080", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("POST /p HTTP/1.1\r\nHost: x.test\r\nX-Key: v\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"))
	b := make([]byte, 4096)
	var all []byte
	for {
		n, err := c.Read(b)
		all = append(all, b[:n]...)
		if err != nil {
			break
		}
	}
	i := strings.Index(string(all), "\r\n\r\n")
	var s Seen
	if i < 0 || json.Unmarshal(all[i+4:], &s) != nil {
		t.Fatalf("bad response %q", all)
	}
	if s.Method != "POST" || s.Path != "/p" || s.Host != "x.test" || s.Body != "hi" || s.Headers["X-Key"][0] != "v" {
		t.Fatalf("got %+v", s)
	}
	if n := len(up.Requests()); n != 1 {
		t.Fatalf("Requests() = %d, want 1", n)
	}
}

func TestDockerContainerReachesUpstream(t *testing.T) {
	RequireRoot(t)
	up := SharedUpstream(t)
	d := SharedDocker(t)
	ct := d.Run(t, "dock", RunOpts{Labels: map[string]string{"clawd.attach": "true"}})
	if ct.PID <= 0 || len(ct.ID) != 64 || ct.Namespace != "moby" {
		t.Fatalf("container not filled in: %+v", ct)
	}
	up.Reset()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, url := range []string{"http://198.51.100.10:8080/d4", "http://[2001:db8::10]:8080/d6"} {
		out, errOut, code, err := ct.Exec(ctx, "wget", "-q", "-O", "-", url)
		if err != nil || code != 0 || !strings.Contains(out, `"remote":"`) {
			t.Fatalf("wget %s: %d %v %s %s", url, code, err, out, errOut)
		}
	}
	if out, _, code, err := ct.Exec(ctx, "sh", "-c", "(sleep 30 &) ; echo started"); err != nil || code != 0 || out != "started\n" {
		t.Fatalf("exec with a background child: %q %d %v", out, code, err)
	}
	if _, _, code, err := ct.Exec(ctx, "sh", "-c", "exit 4"); err != nil || code != 4 {
		t.Fatalf("exit code: %d %v", code, err)
	}
	if n := len(up.Requests()); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2", n)
	}
	ct.Stop(t)
	if _, err := os.Stat(ct.Netns); !os.IsNotExist(err) {
		t.Errorf("netns %s still exists", ct.Netns)
	}
}
