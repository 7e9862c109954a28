#!/usr/bin/env bash
# The quick-start demo: bring the default testbed up, show it, have every
# peripheral ping every other over the user-level stacks, run the storage
# demo (and its kernel-socket baseline), tear it down.
# Usage: scripts/demo.sh [path/to/netstation]
set -euo pipefail
ns=${1:-bin/netstation}
cleanup() { "$ns" down default >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== netstation up (default testbed: cpu0, disk0, display0)"
"$ns" up
echo
echo "== netstation status"
"$ns" status -t default
echo
for a in cpu0 disk0 display0; do
  for b in cpu0 disk0 display0; do
    [ "$a" = "$b" ] && continue
    echo "== netstation ping $a $b"
    "$ns" ping -t default -c 3 -i 50ms "$a" "$b" | tail -1
  done
done
echo
echo "== netstation demo storage (cpu0 -> disk0 over the user-level stacks)"
"$ns" demo storage -t default --size 256MiB
echo
echo "== the same protocol over the kernel's UDP sockets, same namespaces (baseline)"
"$ns" demo storage -t default --size 256MiB --stack kernel
echo
echo "== netstation down"
"$ns" down default
trap - EXIT
