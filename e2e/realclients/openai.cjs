// The OpenAI Node SDK, as an agent uses it: key from OPENAI_API_KEY (a clawd
// placeholder), default base URL and retries. "misuse" sends the Anthropic
// placeholder to the OpenAI host.
const fs = require('fs');
const OpenAI = require('/opt/agent/node_modules/openai').default;

const [mode, id = 'x'] = process.argv.slice(2);
const prompts = { create: 'hello', misuse: 'hello', denied: 'please DENY-ME ' + id, stream: 'stream please CAUSAL:' + id };

async function main() {
  const out = {};
  const opts = { timeout: 120_000 };
  if (mode === 'misuse') opts.apiKey = process.env.ANTHROPIC_API_KEY;
  const client = new OpenAI(opts);
  try {
    const params = { model: 'gpt-5', messages: [{ role: 'user', content: prompts[mode] }] };
    if (mode === 'stream') {
      const stream = await client.chat.completions.create({ ...params, stream: true });
      out.deltas = [];
      for await (const chunk of stream) {
        const t = chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
        if (t) {
          out.deltas.push(t);
          fs.appendFileSync('/tmp/' + id + '.log', 'got ' + out.deltas.length + '\n');
        }
      }
      out.text = out.deltas.join('');
    } else {
      const r = await client.chat.completions.create(params);
      out.text = r.choices[0].message.content;
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
