#!/usr/bin/env bash
# Measures which capabilities clawd needs: runs the whole demo (attach,
# DNS, proxy, secret injection, approvals, bypass checks) with the daemon
# under a capability bounding set, first the candidate set, then with each
# capability dropped in turn. Root, Debian 12. Prints one line per run.
set -uo pipefail
cd "$(dirname "$0")/.."
CAND=${*:-bpf perfmon net_admin sys_admin sys_ptrace sys_resource dac_override chown fowner net_bind_service}
run() { # run CAPS...: 0 if the demo passes with exactly these capabilities
	local set="-all"
	for c in "$@"; do set="$set,+$c"; done
	CLAWD_DEMO_WRAP="setpriv --bounding-set $set --inh-caps -all --" bash scripts/demo.sh >/tmp/clawd-caps.out 2>&1
}
make -s build
if run $CAND; then echo "candidate set: works ($CAND)"; else echo "candidate set FAILS"; tail -20 /tmp/clawd-caps.out; exit 1; fi
MIN=${CLAWD_MIN_CAPS:-sys_admin sys_ptrace}
# shellcheck disable=SC2086
if run $MIN; then echo "only $MIN: works"; else echo "only $MIN: FAILS"; fi
for drop in $CAND; do
	rest=()
	for c in $CAND; do [ "$c" = "$drop" ] || rest+=("$c"); done
	if run "${rest[@]}"; then
		echo "without $drop: works (not needed)"
	else
		echo "without $drop: FAILS -- $(grep -m1 -E 'FAILED|error' /tmp/clawd-caps.out | cut -c1-160)"
	fi
done
