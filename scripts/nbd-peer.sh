#!/usr/bin/env bash
# disk0's NBD server beside nbdkit, same run, same client, same medium.
#
# A testbed (cpu0, disk0) comes up with its state directory on tmpfs, so
# disk0's backing file is on tmpfs; nbdkit (Debian's, file plugin on a
# tmpfs file, the kernel's TCP) runs in a kernel namespace of its own on
# the same fabric bridge; fio's nbd engine runs from another kernel
# namespace on that bridge against both, job by job:
#   1 MiB sequential write QD8 (also fills the region), 1 MiB sequential
#   read QD8, 4 KiB random read QD1, 4 KiB random read QD32.
# Prints a markdown table. Needs root, nbdkit and fio (with its nbd engine).
# Usage: scripts/nbd-peer.sh [path/to/netstation]   (NBD_PEER_TIME=5 s per job)
# NBD_PEER_JOBS="randread32 seqwrite" runs only those jobs and
# NBD_PEER_TARGETS="disk0" only those servers (one line per job, no table);
# with NETSTATION_CPUPROFILE_DIR set, disk0 writes its profile there at down;
# NBD_PEER_CAPTURE=1 captures 1 s of the write job on fio's interface
# (dumpcap, tshark) and prints how long each server took to acknowledge the
# data; NBD_PEER_SCHED=1 records the scheduler for 1 s of it (perf sched) and
# prints how long fio waited for a CPU and behind whom; NBD_PEER_PIN=CPU
# confines each server's threads (disk0's process, nbdkit) to that CPU, fio
# left free.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "nbd-peer: needs root" >&2; exit 1; }
tools="nbdkit fio python3 ip"
[ -n "${NBD_PEER_CAPTURE:-}" ] && tools="$tools dumpcap tshark"
[ -n "${NBD_PEER_SCHED:-}" ] && tools="$tools perf"
pkg() { # the Debian package that holds tool $1
  case $1 in
    ip) echo iproute2 ;; dumpcap) echo wireshark-common ;; perf) echo linux-perf ;; *) echo "$1" ;;
  esac
}
for t in $tools; do
  command -v $t >/dev/null || { echo "nbd-peer: needs $t (apt-get install $(pkg $t))" >&2; exit 1; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "nbd-peer: this fio has no nbd engine" >&2; exit 1; }
ns=${1:-}
if [ -z "$ns" ]; then
  ns=$(mktemp -d)/netstation
  go build -o "$ns" ./cmd/netstation
fi
runtime=${NBD_PEER_TIME:-5}
region=256m
tb=nbdp$$
tb=${tb:0:10}
work=$(mktemp -d -p /dev/shm nbdpeer.XXXXXX)
export NETSTATION_STATE_DIR=$work/state
mkdir -p "$NETSTATION_STATE_DIR"
kns=nstn-$tb-nbdkit
fns=nstn-$tb-fio
nbdkit_pid=
cleanup() {
  [ -n "$nbdkit_pid" ] && kill "$nbdkit_pid" 2>/dev/null && wait "$nbdkit_pid" 2>/dev/null
  ip netns del "$kns" 2>/dev/null || true
  ip netns del "$fns" 2>/dev/null || true
  "$ns" down "$tb" >/dev/null 2>&1 || true
  [ -n "${NBD_PEER_KEEP:-}" ] && echo "nbd-peer: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/topo.yaml" <<YAML
name: $tb
nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk, disk: {size: 1GiB, access: open}}
YAML
"$ns" up -q -f "$work/topo.yaml"
plan=$NETSTATION_STATE_DIR/$tb/plan.json
read -r fab bridge subnet diskip < <(python3 - "$plan" <<'PY'
import json, sys, ipaddress
p = json.load(open(sys.argv[1]))
d = [n for n in p["nodes"] if n["name"] == "disk0"][0]
print(p["fabric_ns"], d["bridge"], p["subnet"], d["addr"].split("/")[0])
PY
)
net=${subnet%.*}   # a /24: hosts .240 and .241 are free in a two-node testbed
bits=${subnet#*/}

# A kernel namespace on the fabric bridge: $1 name, $2 veth name, $3 address.
attach() {
  ip netns add "$1"
  ip link add "$2" type veth peer name "$2p"
  ip link set "$2" netns "$fab"
  ip link set "$2p" netns "$1"
  ip -n "$fab" link set "$2" master "$bridge" up
  ip -n "$1" link set "$2p" name eth0
  ip -n "$1" addr add "$3/$bits" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" link set lo up
}
attach "$kns" "nbk$$" "$net.240"
attach "$fns" "nbf$$" "$net.241"

# nbdkit: the file plugin on a tmpfs file the size of disk0's, the kernel's TCP.
truncate -s 1G "$work/nbdkit.img"
ip netns exec "$kns" nbdkit -f -i "$net.240" -p 10809 file file="$work/nbdkit.img" &
nbdkit_pid=$!
for _ in $(seq 50); do
  ip netns exec "$fns" nbdinfo --size "nbd://$net.240:10809/" >/dev/null 2>&1 && break
  sleep 0.1
done
disk0_pid() { pgrep -f "node run --state $NETSTATION_STATE_DIR/$tb .*--name disk0" | head -1; }
placement="processes unpinned"
if [ -n "${NBD_PEER_PIN:-}" ]; then
  # Threads made later inherit the mask of the thread that makes them.
  taskset -a -p -c "$NBD_PEER_PIN" "$nbdkit_pid" >/dev/null
  taskset -a -p -c "$NBD_PEER_PIN" "$(disk0_pid)" >/dev/null
  placement="each server's threads confined to CPU $NBD_PEER_PIN (NBD_PEER_PIN), fio unpinned"
fi

# job name, rw, bs, iodepth
jobs=("seqwrite write 1m 8" "seqread read 1m 8" "randread1 randread 4k 1" "randread32 randread 4k 32")
sel=${NBD_PEER_JOBS:-}
for target in ${NBD_PEER_TARGETS:-disk0 nbdkit}; do
  uri="nbd://$diskip:10809/disk0"
  [ "$target" = nbdkit ] && uri="nbd://$net.240:10809/"
  for j in "${jobs[@]}"; do
    set -- $j
    [ -n "$sel" ] && [[ " $sel " != *" $1 "* ]] && continue
    # The kernel sender's view of the connection (ss -ti in fio's
    # namespace) a second before the job ends: its RTT, congestion window,
    # spurious retransmissions and window-limited time say whether the
    # server's ACKs or its window held fio back.
    (sleep "$((runtime > 1 ? runtime - 1 : 1))"; ip netns exec "$fns" ss -tin "dport = :10809" >"$work/$target-$1.ss" 2>/dev/null) &
    ss_pid=$!
    cap_pid= sched_pid=
    if [ -n "${NBD_PEER_CAPTURE:-}" ] && [ "$1" = seqwrite ]; then
      # One second from the middle of the job, headers only.
      (sleep "$((runtime / 2))"; ip netns exec "$fns" dumpcap -q -i eth0 -s 128 -f "tcp port 10809" -a duration:1 \
        -w "$work/$target-$1.pcap" >/dev/null 2>&1) &
      cap_pid=$!
    fi
    if [ -n "${NBD_PEER_SCHED:-}" ] && [ "$1" = seqwrite ]; then
      # One second from the middle of the job, every CPU; then who is who.
      (sleep "$((runtime / 2))"
       server=$nbdkit_pid
       [ "$target" = disk0 ] && server=$(disk0_pid)
       echo "$server $(pgrep -n -x fio)" >"$work/$target-$1.pids"
       perf sched record -a -o "$work/$target-$1.sched" -- sleep 1 >/dev/null 2>&1) &
      sched_pid=$!
    fi
    ip netns exec "$fns" fio --name="$1" --ioengine=nbd --uri="$uri" --rw="$2" --bs="$3" --iodepth="$4" \
      --size=$region --runtime="$runtime" --time_based --randrepeat=0 --output-format=json \
      >"$work/$target-$1.json" 2>"$work/$target-$1.err" || {
        echo "nbd-peer: fio $1 against $target failed:" >&2; cat "$work/$target-$1.err" >&2; exit 1; }
    wait "$ss_pid" || true
    [ -n "$cap_pid" ] && { wait "$cap_pid" || true; }
    [ -n "$sched_pid" ] && { wait "$sched_pid" || true; }
  done
done

if [ -n "$sel" ] || [ -n "${NBD_PEER_TARGETS:-}" ]; then
  python3 scripts/nbd_report.py jobs "$work"/*.json
  echo "($placement)"
else
  python3 scripts/nbd_report.py table "$work" "$runtime" "$placement"
fi
python3 scripts/nbd_report.py sender "$work"
if [ -n "${NBD_PEER_CAPTURE:-}" ]; then python3 scripts/nbd_report.py capture "$work"; fi
if [ -n "${NBD_PEER_SCHED:-}" ]; then python3 scripts/nbd_report.py sched "$work"; fi
