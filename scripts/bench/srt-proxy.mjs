// The sandbox-runtime row of make bench: Anthropic's sandbox-runtime
// (@anthropic-ai/sandbox-runtime) HTTP proxy, as its SandboxManager starts
// it, with its own domain allow-list matching (deny list first, then the
// allow list, first match, as filterNetworkRequest does) over RULES entries.
//
//   node srt-proxy.mjs PKGDIR LISTEN_HOST PORT ALLOW_FILE
//
// ALLOW_FILE holds one allowed domain pattern a line. Prints "listening"
// once it accepts connections.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [pkg, host, port, allowFile] = process.argv.slice(2);
const dist = `${pkg}/node_modules/@anthropic-ai/sandbox-runtime/dist/sandbox`;
const { createHttpProxyServer } = await import(pathToFileURL(`${dist}/http-proxy.js`));
const { matchesDomainPatternWithPort } = await import(pathToFileURL(`${dist}/domain-pattern.js`));
const { canonicalizeHost } = await import(pathToFileURL(`${dist}/parent-proxy.js`));
const allowed = readFileSync(allowFile, 'utf8').split('\n').filter(Boolean);
const denied = [];
const server = createHttpProxyServer({
	filter(p, h) {
		const c = canonicalizeHost(h) ?? h;
		if (denied.some(d => matchesDomainPatternWithPort(c, p, d))) return false;
		return allowed.some(a => matchesDomainPatternWithPort(c, p, a));
	},
});
server.listen(Number(port), host, () => console.log('listening'));
