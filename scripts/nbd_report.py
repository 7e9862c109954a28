"""Reports of scripts/nbd-peer.sh, from the files a run left in its work directory.

  nbd_report.py jobs FILE.json...          one line per fio job (NBD_PEER_JOBS/TARGETS runs)
  nbd_report.py table WORK RUNTIME PLACE   the markdown table, disk0 beside nbdkit
  nbd_report.py sender WORK                fio's TCP sender (`ss -ti`) in the 1 MiB write job
  nbd_report.py capture WORK               ACK latencies from NBD_PEER_CAPTURE's pcap
  nbd_report.py sched WORK                 fio's CPU waits from NBD_PEER_SCHED's perf sched
"""
import bisect
import collections
import json
import os
import re
import subprocess
import sys

TARGETS = ("disk0", "nbdkit")


def fio_side(path):
    """The side (write or read) of a fio JSON result that moved data."""
    text = open(path).read()
    j = json.loads(text[text.index("{"):])["jobs"][0]  # fio may print notes first
    return j["write"] if j["write"]["io_bytes"] > 0 else j["read"]


def report(title, per_target):
    """Prints title and one line per target for which per_target has something."""
    lines = [(t, per_target(t)) for t in TARGETS]
    if any(s for _, s in lines):
        print()
        print(title)
        for t, s in lines:
            if s:
                print(f"- {t}: {s}")


def jobs(files):
    for f in files:
        side = fio_side(f)
        print(f"{os.path.basename(f)[:-5]}: {side['iops']:,.0f} IOPS, {side['bw']/1024:,.0f} MiB/s")


def table(work, runtime, placement):
    def job(target, name):
        side = fio_side(f"{work}/{target}-{name}.json")
        pct = side["clat_ns"].get("percentile", {})
        return {"iops": side["iops"], "mibs": side["bw"] / 1024,
                "p50": pct.get("50.000000", 0) / 1e3, "p99": pct.get("99.000000", 0) / 1e3}
    rows = {t: {n: job(t, n) for n in ("seqwrite", "seqread", "randread1", "randread32")} for t in TARGETS}

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

    def r(a, b):
        return f"{a/b:.2f}x" if b else "-"
    print(f"| disk0 / nbdkit | {r(d['randread1']['p50'], n['randread1']['p50'])} (latency) | {r(d['randread1']['p99'], n['randread1']['p99'])} (latency) "
          f"| {r(d['randread1']['iops'], n['randread1']['iops'])} | {r(d['randread32']['iops'], n['randread32']['iops'])} "
          f"| {r(d['randread32']['p99'], n['randread32']['p99'])} (latency) | {r(d['seqwrite']['mibs'], n['seqwrite']['mibs'])} | {r(d['seqread']['mibs'], n['seqread']['mibs'])} |")
    print()
    print(f"fio {runtime} s per job over a 256 MiB region (written first by the 1 MiB write job), one job at a time,")
    print(f"nbd engine from a kernel namespace on the fabric bridge; both servers' backing files on tmpfs; {placement}.")


def sender(work):
    def one(target):
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
    report("fio's TCP sender 1 s before the end of the 1 MiB write job (`ss -ti` in its namespace; counts since the job began):", one)


def capture(work):
    def one(target):
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

        def pct(p):
            return lat[min(len(lat) - 1, len(lat) * p // 100)]
        span = max(acked[-1][0], sent[-1][0]) - min(acked[0][0], sent[0][0])
        return (f"{nbytes / 2**20 / span:,.0f} MiB/s in the capture, {len(acked) / (nbytes / 2**20):.1f} ACKs per MiB; "
                f"segment sent -> ACK covering it: p10 {pct(10):.0f} us, p50 {pct(50):.0f}, p90 {pct(90):.0f}, p99 {pct(99):.0f}")
    report("One second of the 1 MiB write job captured on fio's interface (NBD_PEER_CAPTURE=1):", one)


def sched(work):
    def one(target):
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
    report("One second of the 1 MiB write job under `perf sched record -a` (NBD_PEER_SCHED=1):", one)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"jobs": lambda: jobs(args), "table": lambda: table(*args), "sender": lambda: sender(*args),
     "capture": lambda: capture(*args), "sched": lambda: sched(*args)}[cmd]()
