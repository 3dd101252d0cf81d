// An MCP server on the official TypeScript SDK's Streamable HTTP transport
// (stateless: one transport per request), serving a few tools. The e2e test
// runs it on the host behind a TLS forwarder in the upstream netns.
// Usage: node mcp_server.cjs PORT MODE LOG   (MODE json or sse)
// Every request it receives is appended to LOG as a JSON line (what the
// upstream saw); it prints "listening PORT" when ready (PORT 0: any).
const fs = require('fs');
const http = require('http');
const M = process.env.MCP_SDK || '/opt/agent/node_modules';
const { McpServer } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/server/mcp.js');
const { StreamableHTTPServerTransport } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/server/streamableHttp.js');
const { z } = require(M + '/zod');

const [port, mode, log] = process.argv.slice(2);

function build() {
  const s = new McpServer({ name: 'clawd-e2e-mcp', version: '1.0.0' });
  const text = (t) => ({ content: [{ type: 'text', text: t }] });
  s.registerTool('echo', { description: 'echo text', inputSchema: { text: z.string() } }, async ({ text: t }) => text('echo: ' + t));
  s.registerTool('read_file', { description: 'read a file', inputSchema: { path: z.string() } }, async ({ path }) => text('read ' + path));
  s.registerTool('write_file', { description: 'write a file', inputSchema: { path: z.string(), content: z.string() } }, async ({ path }) => text('wrote ' + path));
  s.registerTool('delete_file', { description: 'delete a file', inputSchema: { path: z.string() } }, async ({ path }) => text('deleted ' + path));
  s.registerTool('secret_tool', { description: 'not for agents', inputSchema: {} }, async () => text('secret ran'));
  return s;
}

http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString();
  fs.appendFileSync(log, JSON.stringify({ method: req.method, body: raw, accept_encoding: req.headers['accept-encoding'] || '' }) + '\n');
  let body;
  try {
    body = raw ? JSON.parse(raw) : undefined;
  } catch (e) {
    res.writeHead(400).end('bad json');
    return;
  }
  const server = build();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: mode === 'json' });
  res.on('close', () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, body);
}).listen(Number(port), '127.0.0.1', function () {
  console.log('listening ' + this.address().port);
});
