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
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=/usr/local/bin/clawd
UNIT=/etc/systemd/system/clawd.service
ETC=/etc/clawd
STATE=/var/lib/clawd
PINS=/sys/fs/bpf/clawd

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
systemd_up() { [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

uninstall() {
	if [ -x "$BIN" ] && [ -S /run/clawd/clawd.sock ]; then
		for c in $("$BIN" ls -o json 2>/dev/null | sed -n 's/^ *"id": "\(.*\)",$/\1/p'); do
			"$BIN" detach "$c" || true
		done
	fi
	if systemd_up; then
		systemctl disable --now clawd.service 2>/dev/null || true
	else
		pkill -TERM -x clawd 2>/dev/null || true
	fi
	# Pins keep containers cut off; with the daemon gone for good, remove them.
	rm -rf "$PINS"
	rm -f "$BIN" "$UNIT"
	systemd_up && systemctl daemon-reload || true
	rm -rf "$ETC" "$STATE" /run/clawd /var/log/clawd
	echo "clawd uninstalled"
}

if [ "${1:-}" = "--uninstall" ]; then
	uninstall
	exit 0
fi

[ -x bin/clawd ] || make build
install -m 0755 bin/clawd "$BIN"
install -d -m 0700 "$ETC" "$STATE" /var/log/clawd
[ -e "$ETC/clawd.yaml" ] || install -m 0600 systemd/clawd.yaml "$ETC/clawd.yaml"
[ -e "$ETC/policy.yaml" ] || install -m 0600 examples/policy.yaml "$ETC/policy.yaml"
"$BIN" policy check "$ETC/policy.yaml"
install -m 0644 systemd/clawd.service "$UNIT"
# Create the secret-store key (and empty store) now, not on first use.
CLAWD_SECRETS_FILE="$STATE/secrets.json" CLAWD_SECRETS_KEY="$STATE/secrets.key" "$BIN" secret ls >/dev/null

if systemd_up; then
	systemctl daemon-reload
	systemctl enable clawd.service >/dev/null
	systemctl restart clawd.service
	echo "clawd is running: systemctl status clawd"
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
