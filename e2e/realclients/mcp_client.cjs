// The official MCP TypeScript SDK's client, as an agent uses it: connect
// over Streamable HTTP, list the tools, call each tool given.
// Usage: node mcp_client.cjs URL CALLS_JSON   (CALLS_JSON: [{"name":..,"arguments":{..}}])
// Prints one JSON line: {"tools":[names],"calls":[{"ok":true,"text":..}|{"ok":false,"code":..,"message":..,"data":..}]}
const M = process.env.MCP_SDK || '/opt/agent/node_modules';
const { Client } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/client/index.js');
const { StreamableHTTPClientTransport } = require(M + '/@modelcontextprotocol/sdk/dist/cjs/client/streamableHttp.js');

async function main() {
  const [url, calls = '[]'] = process.argv.slice(2);
  const out = { calls: [] };
  const client = new Client({ name: 'clawd-e2e-agent', version: '1.0.0' });
  try {
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    out.tools = (await client.listTools()).tools.map((t) => t.name);
    for (const c of JSON.parse(calls)) {
      try {
        const r = await client.callTool(c, undefined, { timeout: 120000 });
        out.calls.push({ ok: !r.isError, text: r.content.map((x) => x.text).join('') });
      } catch (e) {
        out.calls.push({ ok: false, code: e.code, message: String(e.message), data: e.data });
      }
    }
  } catch (e) {
    out.error = String(e && e.message);
  }
  await client.close().catch(() => {});
  console.log(JSON.stringify(out));
}
main();
