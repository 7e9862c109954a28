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
  for f in "$work"/*.json; do
    python3 - "$f" <<'PY'
import json, sys, os
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
side = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
print(f"{os.path.basename(sys.argv[1])[:-5]}: {side['iops']:,.0f} IOPS, {side['bw']/1024:,.0f} MiB/s")
PY
  done
  echo "($placement)"
else
python3 - "$work" "$runtime" "$placement" <<'PY'
import json, sys
work, runtime, placement = sys.argv[1], sys.argv[2], sys.argv[3]
def job(target, name):
    text = open(f"{work}/{target}-{name}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]  # fio may print notes first
    side = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
    pct = side["clat_ns"].get("percentile", {})
    return {"iops": side["iops"], "mibs": side["bw"] / 1024,
            "p50": pct.get("50.000000", 0) / 1e3, "p99": pct.get("99.000000", 0) / 1e3}
rows = {t: {n: job(t, n) for n in ("seqwrite", "seqread", "randread1", "randread32")} for t in ("disk0", "nbdkit")}
def line(t):
    r = rows[t]
    return (f"| {t} | {r['randread1']['p50']:.0f} | {r['randread1']['p99']:.0f} | {r['randread1']['iops']/1e3:.1f}k "
            f"| {r['randread32']['iops']/1e3:.1f}k | {r['randread32']['p99']:.0f} "
            f"| {r['seqwrite']['mibs']:,.0f} | {r['seqread']['mibs']:,.0f} |")
print("| server | 4 KiB randread QD1 p50 us | p99 us | IOPS | 4 KiB randread QD32 IOPS | p99 us | 1 MiB write QD8 MiB/s | 1 MiB read QD8 MiB/s |")
print("|---|---|---|---|---|---|---|---|")
print(line("disk0").replace("| disk0 |", "| disk0 (netstation, user-level TCP) |"))
print(line("nbdkit").replace("| nbdkit |", "| nbdkit (file plugin, kernel TCP) |"))
d, n = rows["disk0"], rows["nbdkit"]
def r(a, b): return f"{a/b:.2f}x" if b else "-"
print(f"| disk0 / nbdkit | {r(d['randread1']['p50'], n['randread1']['p50'])} (latency) | {r(d['randread1']['p99'], n['randread1']['p99'])} (latency) "
      f"| {r(d['randread1']['iops'], n['randread1']['iops'])} | {r(d['randread32']['iops'], n['randread32']['iops'])} "
      f"| {r(d['randread32']['p99'], n['randread32']['p99'])} (latency) | {r(d['seqwrite']['mibs'], n['seqwrite']['mibs'])} | {r(d['seqread']['mibs'], n['seqread']['mibs'])} |")
print()
print(f"fio {runtime} s per job over a {256} MiB region (written first by the 1 MiB write job), one job at a time,")
print(f"nbd engine from a kernel namespace on the fabric bridge; both servers' backing files on tmpfs; {placement}.")
PY
fi
python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
def sender(target):
    try:
        text = open(f"{work}/{target}-seqwrite.ss").read()
    except OSError:
        return None
    def field(name, pat=r"[\d.]+"):
        m = re.search(r"\b" + name + r"[: ](" + pat + ")", text)
        return m.group(1) if m else None
    rtt, cwnd = field("rtt"), field("cwnd")
    if rtt is None:
        return None
    retr = field("retrans", r"\d+/\d+")
    lim = re.search(r"rwnd_limited:\d+ms\(([\d.]+)%\)", text)
    return (f"srtt {float(rtt) * 1000:.0f} us, cwnd {cwnd} segments, "
            f"{(retr or '0/0').split('/')[1]} retransmitted ({field('dsack_dups') or 0} of them DSACKed as spurious), "
            f"reordering {field('reordering') or 3}, receive-window-limited {lim.group(1) if lim else 0} % of the time")
lines = [(t, sender(t)) for t in ("disk0", "nbdkit")]
if any(s for _, s in lines):
    print()
    print("fio's TCP sender 1 s before the end of the 1 MiB write job (`ss -ti` in its namespace; counts since the job began):")
    for t, s in lines:
        if s:
            print(f"- {t}: {s}")
PY
if [ -n "${NBD_PEER_CAPTURE:-}" ]; then
python3 - "$work" <<'PY'
import os, subprocess, sys
work = sys.argv[1]
def acks(target):
    """How long after fio sent each data segment the server's first ACK
    covering its last byte came back, in one second of the write job."""
    f = f"{work}/{target}-seqwrite.pcap"
    if not os.path.exists(f):
        return None
    out = subprocess.run(["tshark", "-r", f, "-T", "fields", "-e", "frame.time_epoch", "-e", "tcp.srcport",
                          "-e", "tcp.len", "-e", "tcp.seq_raw", "-e", "tcp.ack_raw"],
                         capture_output=True, text=True).stdout
    sent, acked, nbytes = [], [], 0
    for line in out.splitlines():
        t, sport, n, seq, ack = line.split("\t")
        if sport == "10809":
            acked.append((float(t), int(ack)))
        elif int(n or 0) > 0:
            sent.append((float(t), (int(seq) + int(n)) % 2**32))
            nbytes += int(n)
    if not sent or not acked:
        return None
    lat, j = [], 0
    for t, end in sent:
        while j < len(acked) and acked[j][0] < t:
            j += 1
        k = j
        while k < len(acked) and (acked[k][1] - end) % 2**32 >= 2**31:  # ack before end
            k += 1
        if k < len(acked):
            lat.append((acked[k][0] - t) * 1e6)
    lat.sort()
    if not lat:
        return None
    pct = lambda p: lat[min(len(lat) - 1, len(lat) * p // 100)]
    span = max(acked[-1][0], sent[-1][0]) - min(acked[0][0], sent[0][0])
    return (f"{nbytes / 2**20 / span:,.0f} MiB/s in the capture, {len(acked) / (nbytes / 2**20):.1f} ACKs per MiB; "
            f"segment sent -> ACK covering it: p10 {pct(10):.0f} us, p50 {pct(50):.0f}, p90 {pct(90):.0f}, p99 {pct(99):.0f}")
lines = [(t, acks(t)) for t in ("disk0", "nbdkit")]
if any(s for _, s in lines):
    print()
    print("One second of the 1 MiB write job captured on fio's interface (NBD_PEER_CAPTURE=1):")
    for t, s in lines:
        if s:
            print(f"- {t}: {s}")
PY
fi
if [ -n "${NBD_PEER_SCHED:-}" ]; then
python3 - "$work" <<'PY'
import bisect, collections, os, re, subprocess, sys
work = sys.argv[1]
def sched(target):
    """From a second of perf sched of the write job: how long fio waited,
    runnable, for a CPU, and what ran on that CPU meanwhile."""
    data, pids = f"{work}/{target}-seqwrite.sched", f"{work}/{target}-seqwrite.pids"
    if not (os.path.exists(data) and os.path.exists(pids)):
        return None
    server, fio = (open(pids).read().split() + ["", ""])[:2]
    out = subprocess.run(["perf", "sched", "timehist", "-i", data], capture_output=True, text=True).stdout
    def who(task):
        if "<idle>" in task:
            return "idle"
        m = re.search(r"\[(\d+)(?:/(\d+))?\]", task)
        pid = m and (m.group(2) or m.group(1))
        return {server: "server", fio: "fio"}.get(pid, "other") if m else "other"
    runs = collections.defaultdict(list)  # cpu -> [(start, end, who)]
    waits = []  # (cpu, from, to): fio runnable, not running
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if not m:
            continue
        end, cpu, task = float(m[1]), int(m[2]), m[3]
        delay, run = float(m[5]) / 1e3, float(m[6]) / 1e3
        g = who(task)
        runs[cpu].append((end - run, end, g))
        if g == "fio" and delay > 0:
            waits.append((cpu, end - run - delay, end - run))
    if not waits and not runs:
        return None
    for r in runs.values():
        r.sort()
    behind = collections.Counter()
    for cpu, a, b in waits:
        r = runs[cpu]
        i = max(0, bisect.bisect_right([x[0] for x in r], a) - 1)
        while i < len(r) and r[i][0] < b:
            behind[r[i][2]] += max(0.0, min(r[i][1], b) - max(r[i][0], a))
            i += 1
    total = sum(b - a for _, a, b in waits)
    return (f"fio waited {total * 1e3:.0f} ms for a CPU in the second, {behind['server'] * 1e3:.0f} ms of it behind "
            f"the server's threads, {behind['other'] * 1e3:.0f} behind other tasks")
lines = [(t, sched(t)) for t in ("disk0", "nbdkit")]
if any(s for _, s in lines):
    print()
    print("One second of the 1 MiB write job under `perf sched record -a` (NBD_PEER_SCHED=1):")
    for t, s in lines:
        if s:
            print(f"- {t}: {s}")
PY
fi
