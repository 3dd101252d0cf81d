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
		if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg"; then
			failed+=("$pkg $name")
		fi
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
