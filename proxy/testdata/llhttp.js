'use strict';
// The real-server side of proxy's differential fuzz target (FuzzFraming in
// framing_fuzz_test.go). Reads length-prefixed inputs from stdin (a 4-byte
// big-endian length, then the bytes) and writes, for each, one JSON line
// with the requests Node's HTTP parser (llhttp, strict: no lenient flags,
// as Node's http server runs it) reads from those bytes:
//   {"requests":[{method,url,major,minor,headers:[[k,v]],trailers,body
//   (base64),upgrade,keepAlive,complete}],"error":"HPE_…","reason":"…"}
// Strings are Node's latin1 decoding of the bytes. Parsing stops at the
// first error and after an upgrade (or CONNECT) request, as Node's server
// does: what follows is no longer HTTP to it.
const { HTTPParser, methods } = require('_http_common');

function parse(buf) {
  const out = { requests: [], error: '', reason: '' };
  const p = new HTTPParser();
  p.initialize(HTTPParser.REQUEST, {}, 1 << 21, HTTPParser.kLenientNone || 0);
  let cur = null;
  let pendingHeaders = [];
  let pendingURL = '';
  p[HTTPParser.kOnHeaders] = (headers, url) => {
    if (cur && !cur.complete) { // trailers
      for (let i = 0; i + 1 < headers.length; i += 2) cur.trailers.push([headers[i], headers[i + 1]]);
      return;
    }
    pendingHeaders = pendingHeaders.concat(headers);
    pendingURL += url || '';
  };
  p[HTTPParser.kOnHeadersComplete] = (major, minor, headers, method, url, _s, _m, upgrade, keepAlive) => {
    if (!headers) { headers = pendingHeaders; url = pendingURL; }
    pendingHeaders = []; pendingURL = '';
    const hs = [];
    for (let i = 0; i + 1 < headers.length; i += 2) hs.push([headers[i], headers[i + 1]]);
    cur = { method: methods[method], url, major, minor, headers: hs, trailers: [], body: [], upgrade: !!upgrade, keepAlive: !!keepAlive, complete: false };
    out.requests.push(cur);
    return 0;
  };
  p[HTTPParser.kOnBody] = (b) => { cur.body.push(Buffer.from(b)); };
  p[HTTPParser.kOnMessageComplete] = () => { if (cur) cur.complete = true; };
  p[HTTPParser.kOnExecute] = () => {};
  const ret = p.execute(buf);
  if (ret instanceof Error) {
    out.error = ret.code || 'error';
    out.reason = ret.reason || String(ret.message);
  }
  for (const r of out.requests) r.body = Buffer.concat(r.body).toString('base64');
  p.close && p.close();
  return out;
}

let acc = Buffer.alloc(0);
process.stdin.on('data', (d) => {
  acc = Buffer.concat([acc, d]);
  while (acc.length >= 4) {
    const n = acc.readUInt32BE(0);
    if (acc.length < 4 + n) break;
    const input = acc.subarray(4, 4 + n);
    acc = acc.subarray(4 + n);
    let res;
    try { res = parse(input); } catch (e) { res = { requests: [], error: 'exception', reason: String(e) }; }
    process.stdout.write(JSON.stringify(res) + '\n');
  }
});
