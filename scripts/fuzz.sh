#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZTIME each (default 30s),
# one at a time, and fails on the first crasher. New crashers are written by
# `go test` to PKG/testdata/fuzz/TARGET/ so they become regression seeds.
# Usage: scripts/fuzz.sh [FUZZTIME]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
fuzztime="${1:-${FUZZTIME:-30s}}"
# Minimizing a new input may take up to 60s by default, longer than a whole
# short run; keep it bounded so every target gets to fuzz.
minimize="${FUZZMINIMIZETIME:-5s}"
targets=0
failed=()
while IFS= read -r file; do
	pkg="./$(dirname "$file")"
	while IFS= read -r name; do
		targets=$((targets + 1))
		echo "== $pkg $name ($fuzztime)"
		log=$(mktemp)
		if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg" 2>&1 | tee "$log" | grep -v '^fuzz: elapsed'; then
			:
		fi
		if grep -q '^ok' "$log"; then
			:
		elif grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log" &&
			go test -count=1 -run "^${name}\$" "$pkg" >/dev/null; then
			# Go 1.26's fuzz coordinator can report its own -fuzztime
			# deadline as a failure (golang/go#75804): no input failed and
			# the corpus passes, so this is not a crasher.
			echo "note: $pkg $name stopped with the coordinator's deadline race (golang/go#75804); no failing input"
		else
			failed+=("$pkg $name")
		fi
		rm -f "$log"
	done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing\.F).*/\1/p' "$file")
done < <(git ls-files --cached --others --exclude-standard -- '*_test.go' | xargs grep -l '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' | sort)
if ((targets == 0)); then
	echo "no fuzz targets found" >&2
	exit 1
fi
if ((${#failed[@]})); then
	printf 'crasher in %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "all $targets fuzz targets ran for $fuzztime each without a crasher"
