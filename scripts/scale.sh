#!/usr/bin/env bash
# Scale benchmark of issue 16: netstation's BenchmarkScale100 and
# BenchmarkScale1000 beside Mininet's bare hosts (Linux-bridge switch, no
# controller) built and torn down in the same run. Prints Markdown on
# stdout (scripts/bench.sh appends it to docs/BENCHMARKS.md).
# Usage: scripts/scale.sh [SIZES...]   (default: 100 1000; needs root)
# Installs Mininet (Debian `mininet`, `bridge-utils`) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scale: needs root" >&2; exit 1; }
if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(100 1000); fi
export NETSTATION_REQUIRE_PRIV=1
if ! command -v mn >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mininet bridge-utils >/dev/null
fi
machine="$(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r), $(go version | cut -d' ' -f3)"
echo "_Measured $(date -u '+%Y-%m-%d %H:%M') UTC on $machine, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start; unpinned (GOMAXPROCS=1 per peripheral)._"
echo
echo '| size | Mininet build+start+stop | netstation up | netstation down | up+down | ratio | views complete after ready | frozen member dead in all views | PSS / peripheral | RSS / peripheral | idle CPU (whole testbed) |'
echo '|---|---|---|---|---|---|---|---|---|---|---|'
for n in "${sizes[@]}"; do
  s=$(date +%s.%N)
  mn --topo "single,$n" --switch lxbr --controller none --test none >/dev/null 2>&1 || true
  e=$(date +%s.%N)
  mn -c >/dev/null 2>&1 || true
  mnt=$(python3 -c "print(f'{$e-$s:.2f}')")
  log=$(mktemp -t scale$n.XXXX.log)
  go test -run '^$' -bench "^BenchmarkScale$n\$" -benchtime 1x -count 1 -timeout 30m -v ./cmd/netstation >"$log" 2>&1 || true
  line=$(grep -E "^BenchmarkScale$n" "$log" | grep ns/op || true)
  if [ -z "$line" ]; then
    echo "| $n | $mnt s | failed: $(grep -m1 -E 'scale_test|netstation ' "$log" | tr '|' '/' | cut -c1-200) | | | | | | | | |"
    echo "scale: $n peripherals failed; the log is $log" >&2
    continue
  fi
  grep -E 'scale_test' "$log" | sed 's/^/    /' >&2 || true
  m() { echo "$line" | awk -v k="$1" '{for (i = 2; i <= NF; i++) if ($i == k) print $(i-1)}'; }
  up=$(m up_s); down=$(m down_s)
  tot=$(python3 -c "print(f'{$up+$down:.2f}')"); ratio=$(python3 -c "print(f'{($up+$down)/$mnt:.2f}x')")
  echo "| $n | $mnt s | $up s | $down s | $tot s | $ratio | $(m views_s) s | $(m dead_seen_s) s | $(m pss_MiB/peripheral) MiB | $(m rss_MiB/peripheral) MiB | $(m idle_%core) % of a core |"
done
echo
echo 'Reproduce: `scripts/scale.sh 100 1000` (netstation: `go test -run '"'"'^$'"'"' -bench '"'"'^BenchmarkScale(100|1000)$'"'"' -benchtime 1x ./cmd/netstation`; Mininet: `mn --topo single,N --switch lxbr --controller none --test none`).'
