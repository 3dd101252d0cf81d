#!/usr/bin/env bash
# clawd demo (make demo): on a Debian 12 machine as root, starts a private
# containerd, an upstream "internet" in a network namespace, the clawd daemon
# and a busybox agent container, attaches the agent and shows what clawd does:
# an allowed read, a denied host, an injected credential, a held write
# approved from the CLI, and bypass attempts that fail.
#
# Addresses: upstream 198.51.100.128/25 (TEST-NET-2), agent 203.0.113.248/30
# (TEST-NET-1), clawd's API on 127.0.0.1. No other address is ever contacted.
# Everything it creates is removed on exit (also on failure or Ctrl-C), and
# leftovers of an interrupted earlier run are removed first: re-runnable.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin:$PATH

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }

D=/tmp/clawd-demo
CNS=clawd-demo                    # containerd namespace
UPNS=clawd-demo-up AGNS=clawd-demo-agent
UPV=cdemo-up AGV=cdemo-ag         # host sides of the veths
UP_HOST=198.51.100.129 UP_IP=198.51.100.130 EVIL_IP=198.51.100.131
AG_HOST=203.0.113.249 AG_IP=203.0.113.250
PINS=/sys/fs/bpf/clawd-demo
API=127.0.0.1:18787
TAG=clawd-demo
CTR=(ctr --address "$D/containerd.sock" --namespace "$CNS")

B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'
[ -t 1 ] || B= G= R= N=
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
ok() { printf '%s    ok: %s%s\n' "$G" "$*" "$N"; }
fail() {
	printf '%s    FAILED: %s%s\n' "$R" "$*" "$N" >&2
	[ -f "$D/clawd.log" ] && { echo "--- clawd log (tail)"; tail -n 30 "$D/clawd.log"; } >&2
	exit 1
}
show() { sed 's/^/    | /'; }
. scripts/lib.sh

cleanup() {
	set +e
	if [ -n "${CLAWD_PID:-}" ]; then kill -TERM "$CLAWD_PID" 2>/dev/null; wait "$CLAWD_PID" 2>/dev/null; fi
	if [ -S "$D/containerd.sock" ]; then
		"${CTR[@]}" task kill -s KILL demo-agent >/dev/null 2>&1
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			"${CTR[@]}" task rm -f demo-agent >/dev/null 2>&1 && break
			sleep 0.3
		done
		"${CTR[@]}" container rm demo-agent >/dev/null 2>&1
	fi
	# Processes of an earlier run (by pid file, never by name).
	for f in "$D"/*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		# Only if it is still ours (the pid may have been reused since).
		{ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$D/" && kill -TERM "$pid" 2>/dev/null
	done
	[ -n "${CTD_PID:-}" ] && wait "$CTD_PID" 2>/dev/null
	[ -n "${UP_PID:-}" ] && wait "$UP_PID" 2>/dev/null
	ip link del "$UPV" 2>/dev/null
	ip link del "$AGV" 2>/dev/null
	ip netns del "$UPNS" 2>/dev/null
	ip netns del "$AGNS" 2>/dev/null
	for cmd in "-s 203.0.113.248/30" "-d 203.0.113.248/30"; do
		# shellcheck disable=SC2086
		while iptables -w -D FORWARD $cmd -m comment --comment "$TAG" -j ACCEPT 2>/dev/null; do :; done
	done
	rm -rf "$PINS"
	# The namespace-level cgroups runc made for the agent (empty by now).
	for d in /sys/fs/cgroup/"$CNS" /sys/fs/cgroup/*/"$CNS"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
	if [ -d "$D" ]; then
		grep -o " $D/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
		rm -rf "$D"
	fi
	[ "${OLD_FWD:-1}" = 0 ] && sysctl -qw net.ipv4.ip_forward=0
	return 0
}

if [ "${1:-}" = --cleanup ]; then (cleanup); exit 0; fi

step "Preparing: Debian packages, build"
bash scripts/deps.sh
if [ ! -x bin/clawd ] || [ -n "$(find cmd daemon proxy policy secrets approval audit bpf -name '*.go' -newer bin/clawd 2>/dev/null | head -1)" ]; then
	make -s build
fi
(cleanup) # leftovers of an interrupted run (subshell: cleanup turns off set -e)
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$D" && chmod 0700 "$D"
CGO_ENABLED=0 go build -o "$D/upstream" ./scripts/demo/upstream
BIN=$PWD/bin/clawd
export CLAWD_SECRETS_FILE=$D/state/secrets.json CLAWD_SECRETS_KEY=$D/state/secrets.key
clawd() { "$BIN" --socket "$D/clawd.sock" "$@"; }
inagent() { # inagent N 'shell script': run in the agent container
	"${CTR[@]}" task exec --exec-id "demo-$1" demo-agent /bin/sh -c "PATH=/bin; $2"
}

step "Upstream \"internet\": netns $UPNS with api.demo.test ($UP_IP) and evil.demo.test ($EVIL_IP), DNS on $UP_IP"
veth_ns "$UPNS" "$UPV" "$UP_HOST" "$UP_IP" 25
ip -n "$UPNS" addr add "$EVIL_IP/25" dev eth0
ip netns exec "$UPNS" "$D/upstream" -http :80 -dns "$UP_IP:53" -log "$D/upstream.log" \
	-a api.demo.test="$UP_IP" -a evil.demo.test="$EVIL_IP" >"$D/upstream.out" 2>&1 &
UP_PID=$!
echo "$UP_PID" >"$D/upstream.pid"
echo "    upstream pid $UP_PID: HTTP echo on :80 (logs what it receives to $D/upstream.log)"

step "Private containerd (socket $D/containerd.sock)"
start_containerd "$D" || true
"${CTR[@]}" version >/dev/null 2>&1 || fail "containerd did not start (see $D/containerd.log)"
echo "    containerd pid $CTD_PID"

step "Agent container demo-agent: busybox, netns $AGNS, veth $AG_IP -> host $AG_HOST, host forwarding"
RFS=$D/rootfs
busybox_rootfs "$RFS" "$UP_IP"
veth_ns "$AGNS" "$AGV" "$AG_HOST" "$AG_IP" 30
OLD_FWD=$(sysctl -n net.ipv4.ip_forward)
sysctl -qw net.ipv4.ip_forward=1
for dir in -s -d; do iptables -w -I FORWARD "$dir" 203.0.113.248/30 -m comment --comment "$TAG" -j ACCEPT; done
"${CTR[@]}" run -d --with-ns "network:/var/run/netns/$AGNS" --rootfs "$RFS" demo-agent /bin/sleep 3600 >/dev/null || fail "ctr run failed"
echo "    running: $("${CTR[@]}" task ls | grep demo-agent)"

step "Before clawd: the agent reaches anything on the route, e.g. $EVIL_IP directly"
out=$(inagent pre 'timeout 10 wget -q -O- http://'"$EVIL_IP"'/ 2>&1') || fail "the demo network does not work: $out"
echo "$out" | show
ok "unprotected: the agent can talk to any address"
PRE_LINES=$(wc -l <"$D/upstream.log")

step "clawd daemon with the demo policy"
mkdir -p "$D/state"
cat >"$D/policy.yaml" <<'EOF'
version: 1
default:
  description: the demo agent may read api.demo.test; writes wait for a human
  default_action: deny
  rules:
    - name: demo-reads
      hosts: api.demo.test
      ports: 80
      methods: [GET, HEAD]
      action: allow
    - name: demo-writes
      hosts: api.demo.test
      ports: 80
      methods: [POST, PUT, PATCH, DELETE]
      action: approve
      approval_timeout: 2m
EOF
sed 's/^/    | /' "$D/policy.yaml"
cat >"$D/clawd.yaml" <<EOF
socket: $D/clawd.sock
state-dir: $D/state
policy: $D/policy.yaml
containerd-address: $D/containerd.sock
namespaces: [$CNS]
docker-host: unix://$D/no-docker.sock
pin-root: $PINS
api-listen: $API
metrics-listen: ""
audit-log: $D/audit.log
dns-upstreams: ["$UP_IP:53"]
log-format: json
EOF
# CLAWD_DEMO_WRAP runs the daemon under a wrapper, e.g. setpriv with a
# reduced capability bounding set (systemd/measure-caps.sh).
# shellcheck disable=SC2086
${CLAWD_DEMO_WRAP:-} "$BIN" daemon --config "$D/clawd.yaml" >"$D/clawd.log" 2>&1 &
CLAWD_PID=$!
echo "$CLAWD_PID" >"$D/clawd.pid"
for _ in $(seq 100); do clawd status >/dev/null 2>&1 && break; sleep 0.2; done
clawd status >/dev/null 2>&1 || fail "clawd did not start"
echo "    clawd pid $CLAWD_PID"

step "clawd attach demo-agent"
clawd attach demo-agent --namespace "$CNS" | show
clawd ls | show

step "1. Allowed read: GET http://api.demo.test/repos"
out=$(inagent r1 'timeout 10 wget -q -O- http://api.demo.test/repos 2>&1') || fail "allowed read failed: $out"
echo "$out" | show
grep -q "got GET /repos" <<<"$out" || fail "unexpected answer"
grep " /repos " "$D/upstream.log" | grep -q "^$UP_HOST:" || fail "the request did not come through clawd"
ok "rule demo-reads let it through; the upstream saw clawd's host address $UP_HOST, not the agent's"

step "2. Denied host: GET http://evil.demo.test/"
if out=$(inagent r2 'timeout 10 wget -q -O- http://evil.demo.test/ 2>&1'); then fail "evil.demo.test was reachable: $out"; fi
echo "$out" | show
ok "evil.demo.test is in no rule: default deny (its name does not even resolve for the agent)"

step "3. Injected credential: the real key stays on the host, the agent holds a placeholder"
printf %s 'sk-demo-REAL-KEY-7f3a9c' | clawd secret set demo-api --host api.demo.test \
	--header Authorization --format 'Bearer {value}' --header-mode
clawd secret ls | show
PH=$(clawd secret ls | awk '$1 == "demo-api" {print $3}')
[ -n "$PH" ] || fail "no placeholder for demo-api"
echo "    the agent sends: Authorization: Bearer $PH"
out=$(inagent r3 "timeout 10 wget -q -O- --header 'Authorization: Bearer $PH' http://api.demo.test/user 2>&1") || fail "request failed: $out"
echo "    the agent got back:"
echo "$out" | show
echo "    the upstream received (its log):"
grep " /user " "$D/upstream.log" | show
grep -q 'authorization="Bearer sk-demo-REAL-KEY-7f3a9c"' "$D/upstream.log" || fail "upstream did not get the real key"
grep -q sk-demo-REAL <<<"$out" && fail "the real key reached the agent"
ok "clawd swapped the placeholder for the key on the wire, and back in the response"

step "4. Held write: POST http://api.demo.test/issues waits for a human"
inagent w1 "timeout 150 wget -q -O- --post-data 'title=ship it' http://api.demo.test/issues 2>&1" >"$D/post.out" 2>&1 &
POST_PID=$!
ID=
for _ in $(seq 100); do
	ID=$(clawd approvals 2>/dev/null | awk '$4 == "POST" {print $1; exit}')
	[ -n "$ID" ] && break
	sleep 0.2
done
[ -n "$ID" ] || fail "no held request appeared"
echo "    \$ clawd approvals"
clawd approvals | show
grep -q " /issues " "$D/upstream.log" && fail "the held request reached the upstream before approval"
echo "    (the upstream has not seen it yet)"
echo "    \$ clawd approve $ID"
clawd approve "$ID" | show
wait "$POST_PID" || fail "the approved request failed: $(cat "$D/post.out")"
echo "    the agent got:"
show <"$D/post.out"
grep -q "got POST /issues" "$D/post.out" || fail "unexpected answer"
ok "approved once from the CLI, then forwarded"

step "5. Bypass attempts"
echo "    direct IP not in the policy: wget http://$EVIL_IP/"
if out=$(inagent b1 "timeout 10 wget -q -O- http://$EVIL_IP/ 2>&1"); then fail "direct IP reachable: $out"; fi
echo "$out" | show
echo "    UDP (tftp to $EVIL_IP:69):"
if out=$(inagent b2 "timeout 10 tftp -g -r x -l /tmp/x $EVIL_IP 2>&1"); then fail "UDP went out: $out"; fi
echo "$out" | show
echo "    ICMP: ping -c 1 -W 2 $UP_IP"
if out=$(inagent b3 "timeout 10 ping -c 1 -W 2 $UP_IP 2>&1"); then fail "ping went out: $out"; fi
echo "$out" | show
if tail -n +"$((PRE_LINES + 1))" "$D/upstream.log" | grep -q "^$AG_IP:"; then fail "the upstream saw a connection from the agent's own address"; fi
ok "every byte the agent sends goes through clawd's proxy or nowhere"

step "Audit log ($D/audit.log)"
tail -n 8 "$D/audit.log" | cut -c1-220 | show

printf '\n%sDemo complete: all steps passed.%s Cleaning up.\n' "$B" "$N"
