#!/usr/bin/env bash
# clawd benchmarks (make bench), as root on Debian 12. Builds the load
# generator scripts/bench/benchtool (static Go), starts a private containerd,
# an upstream netns (198.51.100.64/26) running benchtool serve, and a busybox
# container (203.0.113.244/30) running the generator; measures every row in the
# same run with the same tool, prints a table with ratios to the direct path
# and writes it to docs/benchmarks.md (BENCH_OUT to change). Goals are
# reported, never asserted. Cleans up after itself, re-runnable.
#
#   BENCH_SECS=3        seconds per HTTP / connection-rate measurement
#   BENCH_BULK=1073741824  bytes of the bulk transfer
#   BENCH_PEERS=1       also install and measure squid, tinyproxy, haproxy
#   BENCH_DAEMON_ENV=   environment for the daemon (e.g. GOMAXPROCS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin:$PATH
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }
# One benchmark at a time: runs share fixed addresses, names and the CPUs.
exec 9>/tmp/clawd-bench.lock
flock 9

SECS=${BENCH_SECS:-3}
BULK=${BENCH_BULK:-1073741824}
PEERS=${BENCH_PEERS:-1}
OUT=${BENCH_OUT:-docs/benchmarks.md}
D=/tmp/clawd-bench
CNS=clawd-bench
UPNS=clawd-bench-up AGNS=clawd-bench-ag
UPV=cbench-up AGV=cbench-ag
UP_HOST=198.51.100.65 UP_IP=198.51.100.66
AG_HOST=203.0.113.245 AG_IP=203.0.113.246
PINS=/sys/fs/bpf/clawd-bench
API=127.0.0.1:18797
METRICS=127.0.0.1:18798
TAG=clawd-bench
CTR=(ctr --address "$D/containerd.sock" --namespace "$CNS")

log() { printf '%s\n' "$*" >&2; }
. scripts/lib.sh

cleanup() {
	set +e
	if [ -S "$D/containerd.sock" ]; then
		"${CTR[@]}" task kill -s KILL bench >/dev/null 2>&1
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			"${CTR[@]}" task rm -f bench >/dev/null 2>&1 && break
			sleep 0.3
		done
		"${CTR[@]}" container rm bench >/dev/null 2>&1
	fi
	for f in "$D"/*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		# Only if it is still ours (the pid may have been reused since).
		{ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$D/" && kill -TERM "$pid" 2>/dev/null
	done
	sleep 0.5
	ip link del "$UPV" 2>/dev/null
	ip link del "$AGV" 2>/dev/null
	ip netns del "$UPNS" 2>/dev/null
	ip netns del "$AGNS" 2>/dev/null
	rm -rf "/etc/netns/$AGNS"
	for a in "-s 203.0.113.244/30" "-d 203.0.113.244/30"; do
		# shellcheck disable=SC2086
		while iptables -w -D FORWARD $a -m comment --comment "$TAG" -j ACCEPT 2>/dev/null; do :; done
	done
	rm -rf "$PINS"
	if [ -d "$D" ]; then
		grep -o " $D/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
		rm -rf "$D"
	fi
	return 0
}
if [ "${1:-}" = --cleanup ]; then (cleanup); exit 0; fi

bash scripts/deps.sh
if [ "$PEERS" = 1 ]; then
	need=()
	for p in squid tinyproxy haproxy wrk iperf3; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p"); done
	if ((${#need[@]})); then
		log "installing benchmark peers: ${need[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || log "could not install ${need[*]}"
		# Debian starts them as services on install; the benchmark runs its own.
		for s in squid tinyproxy haproxy; do systemctl disable --now "$s" >/dev/null 2>&1 || true; done
	fi
fi
make -s build
(cleanup)
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$D" && chmod 0700 "$D"
BIN=$PWD/bin/clawd
clawd() { "$BIN" --socket "$D/clawd.sock" "$@"; }
log "building the load generator"
CGO_ENABLED=0 go build -o "$D/benchtool" ./scripts/bench/benchtool

# Upstream: benchtool serve with a self-signed certificate for bench.test.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench.test \
	-addext "subjectAltName=DNS:bench.test,IP:$UP_IP" -addext basicConstraints=critical,CA:TRUE \
	-keyout "$D/up.key" -out "$D/up.crt" >/dev/null 2>&1
veth_ns "$UPNS" "$UPV" "$UP_HOST" "$UP_IP" 26
ip netns exec "$UPNS" "$D/benchtool" serve -cert "$D/up.crt" -key "$D/up.key" >"$D/upstream.log" 2>&1 &
if command -v iperf3 >/dev/null; then
	ip netns exec "$UPNS" iperf3 -s -p 5201 -D --logfile "$D/iperf3.log" --pidfile "$D/iperf3.pid"
fi
echo $! >"$D/upstream.pid"
# DNS for bench.test (clawd only lets a host name through to the addresses
# its own resolver answered for it).
CGO_ENABLED=0 go build -o "$D/dnsd" ./scripts/demo/upstream
ip netns exec "$UPNS" "$D/dnsd" -http 127.0.0.1:18080 -dns "$UP_IP:53" -a bench.test="$UP_IP" >"$D/dnsd.log" 2>&1 &
echo $! >"$D/dnsd.pid"

# Private containerd and the load-generator container.
start_containerd "$D"
RFS=$D/rootfs
busybox_rootfs "$RFS" "$UP_IP"
cp "$D/benchtool" "$RFS/bin/benchtool"
veth_ns "$AGNS" "$AGV" "$AG_HOST" "$AG_IP" 30
sysctl -qw net.ipv4.ip_forward=1
for a in -s -d; do iptables -w -I FORWARD "$a" 203.0.113.244/30 -m comment --comment "$TAG" -j ACCEPT; done
"${CTR[@]}" run -d --with-ns "network:/var/run/netns/$AGNS" --rootfs "$RFS" bench /bin/sleep 86400 >/dev/null

# Standard tools (wrk, iperf3, from Debian) run inside the agent container:
# in its netns and joined to its cgroup, so clawd's programs apply to them as
# to the container's own processes. /etc/netns/AGNS/hosts names bench.test
# (no DNS query leaves for the direct rows).
AG_PID=$("${CTR[@]}" task ls | awk '$1 == "bench" {print $2}')
AG_CG=$(findmnt -t cgroup2 -n -o TARGET | head -1)$(awk -F: '$1 == "0" {print $3}' "/proc/$AG_PID/cgroup")
mkdir -p "/etc/netns/$AGNS"
printf '%s bench.test\n127.0.0.1 localhost\n' "$UP_IP" >"/etc/netns/$AGNS/hosts"
declare -A T
TOOL_ROWS=()
# (Join the cgroup first: ip netns exec remounts /sys without cgroupfs.)
incg() { sh -c 'echo $$ >"$0/cgroup.procs" && exec ip netns exec "$@"' "$AG_CG" "$AGNS" "$@"; }
tools() { # tools ROW: wrk (HTTP/1.1, c=64) and iperf3 (bulk) figures for ROW
	TOOL_ROWS+=("$1")
	local out
	if command -v wrk >/dev/null; then
		out=$(incg wrk -t2 -c64 -d"${SECS}s" --latency "http://bench.test:8080/" 2>&1 || true)
		printf '%s\n' "$out" >>"$D/tools.log"
		T[$1|wrk]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		T[$1|wrk50]=$(awk '$1 == "50%" {print $2}' <<<"$out")
	fi
	if command -v iperf3 >/dev/null; then
		out=$(incg iperf3 -c "$UP_IP" -p 5201 -t "$SECS" -f m 2>&1 || true)
		printf '%s\n' "$out" >>"$D/tools.log"
		T[$1|iperf]=$(awk '/receiver/ {print $(NF-2)}' <<<"$out")
	fi
}

EXN=0
gen() { # gen ARGS...: run benchtool in the container, print its JSON
	EXN=$((EXN + 1))
	"${CTR[@]}" task exec --exec-id "g$EXN" bench /bin/benchtool "$@" 2>&1 | tail -n 1 || true
}
wait_port() { # wait_port PORT: until something listens on the host
	for _ in $(seq 50); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
	return 1
}
jget() { sed -n 's/.*"'"$1"'":"\{0,1\}\([^,"}]*\).*/\1/p' <<<"$2"; }
jerr() { sed -n 's/.*"error":"\(.\{1,100\}\).*/\1/p' <<<"$1" | tr -d '"\\|'; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# Results: R[row|metric]
declare -A R
ROWS=()
measure_tcp() { # row addr_bulk addr_conns
	local j
	j=$(gen bulk -addr "$2" -bytes "$BULK")
	R[$1|bulk]=$(jget mbps "$j")
	[ -n "$(jget error "$j")" ] && R[$1|bulk]="n/a ($(jerr "$j"))"
	j=$(gen conns -addr "$3" -c 8 -d "${SECS}s")
	R[$1|conns]=$(jget per_sec "$j")
	return 0
}
measure_http() { # row url [benchtool http flags]
	local j c row=$1 url=$2
	shift 2
	for c in 1 64 512; do
		j=$(${GEN:-gen} http -url "$url" -c "$c" -d "${SECS}s" "$@")
		R[$row|rps$c]=$(jget rps "$j")
		R[$row|p50_$c]=$(jget p50_us "$j")
		R[$row|p99_$c]=$(jget p99_us "$j")
		if [ "$(jget requests "$j")" = 0 ] || [ -z "$j" ]; then R[$row|rps$c]="n/a ($(jerr "$j"))"; fi
	done
}
row() { ROWS+=("$1"); log "measuring: $1"; }

HTTP_URL=http://bench.test:8080/
HTTPS_URL=https://bench.test:8443/

# --- direct (no clawd) ---
row direct
measure_tcp direct "$UP_IP:9100" "$UP_IP:9101"
measure_http direct "$HTTP_URL"
row "direct HTTPS"
measure_http "direct HTTPS" "$HTTPS_URL"
tools direct

# --- peers: explicit forward proxies and SNI passthrough on the host ---
peer_rows() {
	local ip=$AG_HOST
	row "squid (forward proxy)"
	if command -v squid >/dev/null; then
		cat >"$D/squid.conf" <<EOF
http_port $ip:3128
acl bench dst $UP_IP
http_access allow bench
http_access deny all
cache deny all
access_log none
cache_log /dev/null
pid_filename none
coredump_dir /tmp
max_filedescriptors 65536
workers 1
EOF
		squid -f "$D/squid.conf" -N >"$D/squid.out" 2>&1 &
		echo $! >"$D/squid.pid"
		wait_port 3128 || sleep 2
		# Explicit proxies resolve names themselves: by address.
		measure_http "squid (forward proxy)" "http://$UP_IP:8080/" -proxy "http://$ip:3128"
		kill "$(cat "$D/squid.pid")" 2>/dev/null; rm -f "$D/squid.pid"
	else
		R["squid (forward proxy)|note"]="n/a (squid not installed)"
	fi
	row "tinyproxy (forward proxy)"
	if command -v tinyproxy >/dev/null; then
		cat >"$D/tinyproxy.conf" <<EOF
Port 8888
Listen $ip
Timeout 60
MaxClients 1024
Allow 203.0.113.244/30
LogLevel Critical
EOF
		tinyproxy -d -c "$D/tinyproxy.conf" >"$D/tinyproxy.out" 2>&1 &
		echo $! >"$D/tinyproxy.pid"
		wait_port 8888 || sleep 1
		measure_http "tinyproxy (forward proxy)" "http://$UP_IP:8080/" -proxy "http://$ip:8888"
		kill "$(cat "$D/tinyproxy.pid")" 2>/dev/null; rm -f "$D/tinyproxy.pid"
	else
		R["tinyproxy (forward proxy)|note"]="n/a (tinyproxy not installed)"
	fi
	row "haproxy (SNI passthrough)"
	if command -v haproxy >/dev/null; then
		cat >"$D/haproxy.cfg" <<EOF
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend sni
  bind $ip:9443
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend up if { req_ssl_sni -i bench.test }
frontend raw
  bind $ip:9200
  default_backend bulk
frontend rawc
  bind $ip:9201
  default_backend conn
backend up
  server s $UP_IP:8443
backend bulk
  server s $UP_IP:9100
backend conn
  server s $UP_IP:9101
EOF
		haproxy -f "$D/haproxy.cfg" -db >"$D/haproxy.out" 2>&1 &
		echo $! >"$D/haproxy.pid"
		if ! wait_port 9443; then
			R["haproxy (SNI passthrough)|note"]="n/a (haproxy did not start: $(tail -n 1 "$D/haproxy.out" | tr -d '|'))"
			return 0
		fi
		measure_tcp "haproxy (SNI passthrough)" "$ip:9200" "$ip:9201"
		measure_http "haproxy (SNI passthrough)" "$HTTPS_URL" -connect "$ip:9443"
		kill "$(cat "$D/haproxy.pid")" 2>/dev/null; rm -f "$D/haproxy.pid"
	else
		R["haproxy (SNI passthrough)|note"]="n/a (haproxy not installed)"
	fi
}
[ "$PEERS" = 1 ] && peer_rows

# --- clawd ---
base_rules() {
	cat <<EOF
    - name: raw
      cidrs: [198.51.100.64/26]
      ports: [9100, 9101, 9102, 5201]
      action: allow
    - name: held
      hosts: bench.test
      ports: 8080
      methods: POST
      action: approve
      approval_timeout: 10m
    - name: http
      hosts: bench.test
      ports: 8080
      action: allow
EOF
}
policy() { # policy KIND > file: pass | big | mitm
	echo "version: 1"
	echo "default:"
	echo "  default_action: deny"
	echo "  rules:"
	if [ "$1" = big ]; then
		for i in $(seq 1 9996); do
			printf '    - {name: r%d, hosts: h%d.example.com, ports: 443, action: allow}\n' "$i" "$i"
		done
	fi
	base_rules
	if [ "$1" = mitm ]; then
		printf '    - name: tls\n      hosts: bench.test\n      ports: 8443\n      intercept: true\n      action: allow\n'
	else
		printf '    - name: tls\n      hosts: bench.test\n      ports: 8443\n      action: allow\n'
	fi
}
policy pass >"$D/policy.yaml"
mkdir -p "$D/state"
cat >"$D/clawd.yaml" <<EOF
socket: $D/clawd.sock
state-dir: $D/state
policy: $D/policy.yaml
containerd-address: $D/containerd.sock
namespaces: [$CNS]
docker-host: unix://$D/no-docker.sock
pin-root: $PINS
api-listen: $API
metrics-listen: $METRICS
pprof: true
audit-log: $D/audit.log
log-level: warn
log-format: json
dns-upstreams: ["$UP_IP:53"]
upstream-ca-file: $D/up.crt
approval:
  max-pending: 2000
  max-pending-per-container: 2000
EOF
(ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; exec env ${BENCH_DAEMON_ENV:-} "$BIN" daemon --config "$D/clawd.yaml" >"$D/clawd.log" 2>&1) &
echo $! >"$D/clawd.pid"
for _ in $(seq 100); do clawd status >/dev/null 2>&1 && break; sleep 0.2; done
CLAWD_PID=$(cat "$D/clawd.pid")
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$CLAWD_PID/status"; }

# Attach time: median of 5 attach calls (CLI round trip included).
ATT=()
for i in 1 2 3 4 5; do
	t0=$(date +%s%N)
	clawd attach bench --namespace "$CNS" >/dev/null
	ATT+=("$(ms_since "$t0")")
	[ "$i" = 5 ] || clawd detach bench --namespace "$CNS" >/dev/null 2>&1 || clawd detach bench >/dev/null
done
ATTACH_MS=$(printf '%s\n' "${ATT[@]}" | sort -n | sed -n 3p)
RSS_IDLE0=$(rss)

row "clawd TCP/SNI passthrough"
measure_tcp "clawd TCP/SNI passthrough" "$UP_IP:9100" "$UP_IP:9101"
measure_http "clawd TCP/SNI passthrough" "$HTTPS_URL"
tools "clawd (HTTP per request, TCP passthrough)"

policy big >"$D/policy-big.yaml"
cp "$D/policy-big.yaml" "$D/policy.new" && mv "$D/policy.new" "$D/policy.yaml"
RL=()
for i in 1 2 3; do
	t0=$(date +%s%N)
	clawd policy reload >/dev/null
	RL+=("$(ms_since "$t0")")
done
RELOAD_MS=$(printf '%s\n' "${RL[@]}" | sort -n | sed -n 2p)
RULES=$(clawd status -o json 2>/dev/null | sed -n 's/.*"policy_rules": *\([0-9]*\).*/\1/p' | head -1)
row "clawd HTTP, 10,000-rule policy"
# A CPU profile of clawd while this row runs (c=1 then c=64): where the
# added latency goes.
curl -s -o "$D/http.pprof" "http://$METRICS/debug/pprof/profile?seconds=$((2 * SECS))" &
PROF_PID=$!
measure_http "clawd HTTP, 10,000-rule policy" "$HTTP_URL"
wait "$PROF_PID" || true
tools "clawd, 10,000-rule policy"
cp "$D/http.pprof" /tmp/clawd-bench-http.pprof 2>/dev/null || true
PROFILE=$(go tool pprof -top -nodecount=12 "$BIN" "$D/http.pprof" 2>/dev/null | sed -n '/flat%/,$p' || true)

policy mitm >"$D/policy.new" && mv "$D/policy.new" "$D/policy.yaml"
clawd policy reload >/dev/null
row "clawd intercepted HTTPS"
measure_http "clawd intercepted HTTPS" "$HTTPS_URL"

row "clawd via iptables REDIRECT (leash-style)"
# The same clawd listener reached the classic way: the generator runs in the
# container's netns but outside its cgroup (so no eBPF redirect applies) and
# an iptables nat REDIRECT sends its connects to clawd, which reads the
# destination from conntrack (SO_ORIGINAL_DST). Same 10,000-rule policy.
cp "$D/policy-big.yaml" "$D/policy.new" && mv "$D/policy.new" "$D/policy.yaml"
clawd policy reload >/dev/null
LPORT=$(ip netns exec "$AGNS" ss -Hltn | awk '$4 ~ /^127\.0\.0\.1:/ {sub(/.*:/, "", $4); print $4; exit}')
if [ -n "$LPORT" ] && ip netns exec "$AGNS" iptables -w -t nat -A OUTPUT -p tcp -d "$UP_IP" --dport 8080 -j REDIRECT --to-ports "$LPORT"; then
	hgen() { ip netns exec "$AGNS" "$D/benchtool" "$@" 2>&1 | tail -n 1 || true; }
	GEN=hgen measure_http "clawd via iptables REDIRECT (leash-style)" "$HTTP_URL"
	ip netns exec "$AGNS" iptables -w -t nat -F OUTPUT
else
	R["clawd via iptables REDIRECT (leash-style)|note"]="n/a (could not install the REDIRECT rule)"
fi

# RSS with 10,000 idle redirected connections.
log "measuring: RSS with 10,000 idle connections"
# The container's RLIMIT_NOFILE is 1024: ten generators of 1,000 each.
for i in 0 1 2 3 4 5 6 7 8 9; do
	"${CTR[@]}" task exec --exec-id "idle$i" bench /bin/benchtool idle -addr "$UP_IP:9102" -n 1000 >"$D/idle$i.out" 2>&1 &
done
IDLE_OPEN=0
for _ in $(seq 600); do
	[ "$(cat "$D"/idle?.out 2>/dev/null | grep -c '"open"')" = 10 ] && break
	sleep 0.2
done
for i in 0 1 2 3 4 5 6 7 8 9; do
	o=$(jget open "$(cat "$D/idle$i.out" 2>/dev/null)")
	IDLE_OPEN=$((IDLE_OPEN + ${o:-0}))
done
RSS_IDLE=$(rss)
for i in 0 1 2 3 4 5 6 7 8 9; do "${CTR[@]}" task kill --exec-id "idle$i" -s KILL bench >/dev/null 2>&1 || true; done
sleep 2

# RSS with 1,000 held approvals.
log "measuring: RSS with 1,000 held approvals"
"${CTR[@]}" task exec --exec-id "hold" bench /bin/benchtool hold -url "$HTTP_URL" -n 1000 >"$D/hold.out" 2>&1 &
HELD=0
for _ in $(seq 300); do
	HELD=$(clawd approvals 2>/dev/null | tail -n +2 | wc -l)
	[ "$HELD" -ge 1000 ] && break
	sleep 0.2
done
RSS_HELD=$(rss)
"${CTR[@]}" task kill --exec-id hold -s KILL bench >/dev/null 2>&1 || true

log "measuring: policy.BenchmarkDecide"
GOB=$(go test -run '^$' -bench 'BenchmarkDecide(10|10000)$' -benchtime 200000x ./policy/ 2>/dev/null | awk '/^BenchmarkDecide/ {printf "%s %s ns/op; ", $1, $3}')

# --- table ---
fmt() { # fmt VALUE BASE: "v (×r)"
	local v=$1 b=${2:-}
	case "$v" in "" | n/a*) echo "${v:--}"; return ;; esac
	if [ -n "$b" ] && [[ "$b" != n/a* ]] && [ "$b" != 0 ]; then
		awk -v v="$v" -v b="$b" 'BEGIN {printf "%.0f (%.2f×)", v, v/b}'
	else
		awk -v v="$v" 'BEGIN {printf "%.0f", v}'
	fi
}
lat() { # lat ROW BASE C: "p50/p99 µs (+added p50)"
	local p50=${R[$1|p50_$3]:-} p99=${R[$1|p99_$3]:-} b50=${R[$2|p50_$3]:-}
	case "${R[$1|rps$3]:-}" in "" | n/a*) echo "-"; return ;; esac
	if [ "$1" = "$2" ]; then echo "$p50 / $p99"; else echo "$p50 / $p99 (+$((p50 - b50)))"; fi
}
base_of() { case "$1" in *HTTPS* | *SNI*) echo "direct HTTPS" ;; *) echo direct ;; esac; }
TABLE=$(
	echo "| path | bulk MB/s (1 GiB, 1 conn) | new conns/s | req/s c=1 | req/s c=64 | req/s c=512 | p50 / p99 µs c=1 (+added p50) | c=64 | c=512 |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for r in "${ROWS[@]}"; do
		if [ -n "${R[$r|note]:-}" ]; then
			echo "| $r | ${R[$r|note]} ||||||||"
			continue
		fi
		b=$(base_of "$r")
		echo "| $r | $(fmt "${R[$r|bulk]:-}" "${R[direct|bulk]}") | $(fmt "${R[$r|conns]:-}" "${R[direct|conns]}") | $(fmt "${R[$r|rps1]:-}" "${R[$b|rps1]:-}") | $(fmt "${R[$r|rps64]:-}" "${R[$b|rps64]:-}") | $(fmt "${R[$r|rps512]:-}" "${R[$b|rps512]:-}") | $(lat "$r" "$b" 1) | $(lat "$r" "$b" 64) | $(lat "$r" "$b" 512) |"
	done
)
TOOLS_TABLE=$(
	echo "| path | wrk req/s c=64 | wrk p50 | iperf3 Mbit/s |"
	echo "|---|---|---|---|"
	for r in "${TOOL_ROWS[@]}"; do
		echo "| $r | $(fmt "${T[$r|wrk]:-}" "${T[direct|wrk]:-}") | ${T[$r|wrk50]:--} | $(fmt "${T[$r|iperf]:-}" "${T[direct|iperf]:-}") |"
	done
)
PASS_RATIO=$(awk -v v="${R[clawd TCP/SNI passthrough|bulk]:-0}" -v b="${R[direct|bulk]:-1}" 'BEGIN {printf "%.0f", 100*v/b}')
ADDED_P50=$((${R[clawd HTTP, 10,000-rule policy|p50_1]:-0} - ${R[direct|p50_1]:-0}))
MACHINE="$(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
REPORT=$(
	cat <<EOF
# clawd benchmarks

\`make bench\` (scripts/bench.sh), $(date -u +%Y-%m-%d), on: $MACHINE.

Every figure comes from the same run and the same load generator
(scripts/bench/benchtool, static Go, inside an attached busybox container;
upstream benchtool serve in a network namespace). Ratios are to the direct
path (no clawd); HTTPS rows are compared with direct HTTPS. Latency is per
keep-alive request; "+N" is the p50 added to the direct path, in µs. ${SECS}s
per measurement. On 2 cores the generator, clawd and the upstream share the
CPUs, so throughput rows measure CPU cost as much as latency.

$TABLE

| figure | value | goal |
|---|---|---|
| passthrough bulk throughput vs direct | ${PASS_RATIO} % | ≥ 90 % |
| added p50, HTTP c=1 (10,000 rules) | ${ADDED_P50} µs | ≤ 50 µs |
| attach (median of 5, CLI round trip included) | ${ATTACH_MS} ms | ≤ 50 ms |
| policy reload, ${RULES:-10000} rules (median of 3, \`clawd policy reload\` round trip) | ${RELOAD_MS} ms | ≤ 100 ms |
| clawd RSS, attached, idle | ${RSS_IDLE0} MiB | |
| clawd RSS, ${IDLE_OPEN:-?} idle redirected connections | ${RSS_IDLE} MiB | |
| clawd RSS, ${HELD} held approvals | ${RSS_HELD} MiB | |
| policy evaluation (go test -bench) | ${GOB} | |

Standard tools from Debian, run inside the same attached container (its
netns and cgroup): wrk (HTTP/1.1 keep-alive, 64 connections) and iperf3
(bulk TCP, passed through once allowed). h2load is not run: the HTTP/2 rows
above use benchtool.

$TOOLS_TABLE

CPU profile of clawd during the "clawd HTTP, 10,000-rule policy" row
(\`go tool pprof -top\`, ${SECS}s at c=1 and c=64; the daemon runs with \`pprof: true\`):

\`\`\`
${PROFILE:-(no profile taken)}
\`\`\`
EOF
)
echo "$REPORT"
echo "$REPORT" >"$OUT"
log "written to $OUT"
