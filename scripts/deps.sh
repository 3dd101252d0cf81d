#!/usr/bin/env bash
# Installs the Debian packages clawd's build, tests and demo need, if missing.
# Idempotent; run as root on Debian 12.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# systemd: systemd-analyze (unit verification test); openssl: bench certificates.
# mmdebstrap: the real-client agent root (e2e/harness/agentroot.sh), whose npm
# packages the host's npm fetches (Debian's npm unless one is installed).
# chromium: the approvals web page test (approval/web, headless).
# postgresql: the fleet store's tests start a throwaway server (internal/pgtest).
for p in containerd runc busybox-static docker.io iproute2 iptables ca-certificates curl systemd openssl mmdebstrap chromium postgresql; do
	have "$p" || need+=("$p")
done
# node: the real-server side (llhttp) of proxy's differential fuzz test
# (FuzzFraming), which fails without it.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
	echo "Go 1.26 is required (https://go.dev/doc/install); install it at /usr/local/go" >&2
	exit 1
fi
