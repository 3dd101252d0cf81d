// The Anthropic TypeScript SDK, as an agent uses it: key from
// ANTHROPIC_API_KEY (a clawd placeholder), default base URL and retries.
const fs = require('fs');
const Anthropic = require('/opt/agent/node_modules/@anthropic-ai/sdk').default;

const [mode, id = 'x'] = process.argv.slice(2);
const prompts = { create: 'hello', denied: 'please DENY-ME ' + id, held: 'please HOLD-ME ' + id, big: 'A'.repeat(3 << 20), stream: 'stream please CAUSAL:' + id };

async function main() {
  const out = {};
  const client = new Anthropic({ timeout: 120_000 });
  try {
    const params = { model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: prompts[mode] }] };
    if (mode === 'stream') {
      const stream = client.messages.stream(params);
      out.deltas = [];
      for await (const ev of stream) {
        if (ev.type === 'content_block_delta') {
          out.deltas.push(ev.delta.text);
          fs.appendFileSync('/tmp/' + id + '.log', 'got ' + out.deltas.length + '\n');
        }
      }
      out.text = out.deltas.join('');
    } else {
      const m = await client.messages.create(params);
      out.text = m.content.map((b) => b.text).join('');
    }
    out.status = 200;
  } catch (e) {
    out.status = e.status;
    out.error = String(e.message || e);
    const c = e.cause;
    out.code = (c && (c.code || (c.cause && c.cause.code))) || e.code;
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
main();
