#!/usr/bin/env bash
# make fuzz: runs every fuzz target of the module for FUZZTIME each (default
# 10s), one after another (go test -fuzz takes one target per run). `make
# test` already runs each target's seed corpus; this searches beyond it.
# A failure leaves its input under the package's testdata/fuzz/ and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
go=${GO:-go}
n=0
for file in $(git ls-files '*_test.go'); do
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		pkg=./$(dirname "$file")
		echo "== $pkg $target ($fuzztime)"
		"$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		n=$((n + 1))
	done
done
echo "fuzz: $n targets, $fuzztime each, no failure"
