#!/usr/bin/env bash
# Installs clawd on this host (idempotent, as root):
#   binary        /usr/local/bin/clawd
#   unit          /etc/systemd/system/clawd.service
#   config        /etc/clawd/clawd.yaml, /etc/clawd/policy.yaml (never overwritten)
#   state         /var/lib/clawd (secret key and interception CA created here)
# and enables and starts the unit where systemd is PID 1.
#
#   scripts/install.sh              install or upgrade
#   scripts/install.sh --uninstall  detach every container, stop, and remove it all
#
# Overrides (tests, packaging): CLAWD_ROOT installs under a root directory
# (DESTDIR-like; systemd is then left alone), CLAWD_PIN_ROOT is the bpffs
# directory --uninstall removes, CLAWD_BIN_SRC the binary to install
# (default bin/clawd, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${CLAWD_ROOT:-}
BIN=$ROOT/usr/local/bin/clawd
UNIT=$ROOT/etc/systemd/system/clawd.service
ETC=$ROOT/etc/clawd
STATE=$ROOT/var/lib/clawd
RUN=$ROOT/run/clawd
LOGS=$ROOT/var/log/clawd
PINS=${CLAWD_PIN_ROOT:-/sys/fs/bpf/clawd}
SRC=${CLAWD_BIN_SRC:-bin/clawd}

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
systemd_up() { [ -z "$ROOT" ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

# daemon_pids: processes running the installed binary (by executable, not
# by name: other clawd binaries on the host are not ours to stop).
daemon_pids() {
	local p exe want
	want=$(readlink -f "$BIN" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case "$exe" in "$want" | "$want (deleted)") echo "${p#/proc/}" ;; esac
	done
	return 0
}

uninstall() {
	if [ -x "$BIN" ] && [ -S "$RUN/clawd.sock" ]; then
		for c in $("$BIN" --socket "$RUN/clawd.sock" ls -o json 2>/dev/null | sed -n 's/^ *"id": "\(.*\)",$/\1/p' | sort -u); do
			"$BIN" --socket "$RUN/clawd.sock" detach "$c" >/dev/null 2>&1 && echo "detached $c"
		done
	fi
	if systemd_up; then
		systemctl disable --now clawd.service 2>/dev/null || true
	fi
	pids=$(daemon_pids)
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -TERM $pids 2>/dev/null || true
		for _ in $(seq 150); do
			[ -z "$(daemon_pids)" ] && break
			sleep 0.2
		done
	fi
	# Pins keep containers cut off; with the daemon gone for good, remove them.
	rm -rf "$PINS"
	rm -f "$BIN" "$UNIT"
	if systemd_up; then systemctl daemon-reload || true; fi
	rm -rf "$ETC" "$STATE" "$RUN" "$LOGS"
	echo "clawd uninstalled"
}

if [ "${1:-}" = "--uninstall" ]; then
	uninstall
	exit 0
fi

[ "$SRC" != bin/clawd ] || [ -x bin/clawd ] || make build
install -d -m 0755 "$(dirname "$BIN")" "$(dirname "$UNIT")"
# Beside, then renamed: a running daemon's binary cannot be overwritten.
install -m 0755 "$SRC" "$BIN.new"
mv -f "$BIN.new" "$BIN"
install -d -m 0700 "$ETC" "$STATE" "$LOGS"
# An operator's files are never overwritten.
[ -e "$ETC/clawd.yaml" ] || install -m 0600 systemd/clawd.yaml "$ETC/clawd.yaml"
[ -e "$ETC/policy.yaml" ] || install -m 0600 examples/policy.yaml "$ETC/policy.yaml"
"$BIN" policy check "$ETC/policy.yaml"
install -m 0644 systemd/clawd.service "$UNIT"
# Create the secret-store key (and empty store) now, not on first use. The
# interception CA is created by the daemon in $STATE on its first start.
CLAWD_SECRETS_FILE="$STATE/secrets.json" CLAWD_SECRETS_KEY="$STATE/secrets.key" "$BIN" secret ls >/dev/null

if systemd_up; then
	systemctl daemon-reload
	systemctl enable clawd.service >/dev/null
	systemctl restart clawd.service
	echo "clawd is running: systemctl status clawd"
elif [ -n "$ROOT" ]; then
	echo "installed under $ROOT (systemd left alone)"
else
	echo "systemd is not PID 1 here: start the daemon yourself with"
	echo "  $BIN daemon --config $ETC/clawd.yaml"
fi
cat <<EOF

Next steps:
  clawd doctor                               check this host
  \$EDITOR $ETC/policy.yaml                   what agents may reach (hot reloaded)
  echo -n "\$TOKEN" | clawd secret set github --preset github
  clawd attach <container> --trust-ca --env  attach an agent; prints the placeholders to give it
  clawd approvals watch                      held requests
EOF
