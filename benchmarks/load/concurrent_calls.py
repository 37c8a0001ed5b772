"""Concurrent calls: N recorded calls with audio held up at once, and what they cost.

How many calls one server carries is the media plane's question: every
call is two relay sessions, two RTP streams each way, a recorder and an
open WAV file. Per step N (a fresh server each time):

1. a SIPp callee echoing RTP (-rtp_echo) and a SIPp caller that sets up N
   calls at ``--rate`` calls/s to a recorded number (the recording notice
   plays first), each playing g711a.pcap's audio back to back
   (sipp-scenarios/load_caller_pcap.xml, 20 ms packets by default);
2. once all N are bridged, a ``--window`` of seconds is measured: the
   server's CPU (main thread apart) and SIPp's, RSS and fds against the
   baseline before the load, UDP receive-queue drops on the server's and on
   SIPp's sockets, the kernel's UDP error counters, and the round trip of a
   latency probe call (benchmarks/load/probe.py);
3. the calls end by themselves; then the recordings are checked: one
   readable stereo WAV per CDR, its length against the CDR's duration, and
   the loss per channel from the loud samples (benchmarks/load/media.py).

``--idle`` measures what an established call costs with no RTP at all
(load_caller.xml holding the call): memory and fds per call, and the CPU
the server spends on calls that carry nothing.

On two cores, SIPp playing and echoing the audio costs about as much CPU
as the server, so each row says how busy SIPp was: when it is the
generator that saturates, the row is marked ``generator-limited``.

    .venv/bin/python -m benchmarks.load.concurrent_calls                  # 50..400, ~8 min
    .venv/bin/python -m benchmarks.load.concurrent_calls --calls 800 1000 1200
    .venv/bin/python -m benchmarks.load.concurrent_calls --idle --calls 1000 2000
    .venv/bin/python -m benchmarks.load.concurrent_calls --calls 400 --profile-calls 400
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.load import media, probe, profiling
from benchmarks.load.common import (
    ANNOUNCEMENT_SECONDS,
    PCAP_SECONDS,
    RESULTS_DIR,
    PortPlan,
    Sampler,
    Server,
    ServerSpec,
    SippRun,
    add_package_arguments,
    callee_args,
    caller_args,
    default_pinning,
    log,
    media_totals,
    prepare_package,
    read_rtt,
    require_sipp,
    result_header,
    start_sipp,
    udp_counters,
    wait_for_cdrs,
    wait_for_quiet,
    workdir,
    write_result,
)

KIND = "concurrent_calls"
WARMUP_CALLS = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--rate", type=float, default=50, help="call set-up rate (calls/s)")
    parser.add_argument("--window", type=float, default=30,
                        help="seconds measured with all calls up")
    parser.add_argument("--pairs", type=int, default=1,
                        help="SIPp caller/callee pairs (each its own number and echo "
                             "socket): one SIPp echo thread drops packets past ~300 calls")
    parser.add_argument("--idle", action="store_true",
                        help="established calls with no RTP (memory per idle call)")
    parser.add_argument("--no-record", dest="record", action="store_false",
                        help="a number that is not recorded (and has no announcement)")
    parser.add_argument("--ptime", type=int, choices=(20, 30), default=20,
                        help="packet time of the audio the callers play (30 = g711a.pcap "
                             "as shipped; --audio stream is always 20)")
    parser.add_argument("--audio", choices=("pcap", "stream"), default="pcap",
                        help="pcap: play_pcap_audio (a SIPp thread per call); stream: SIPp's "
                             "rtpstream (-rtp_threadtasks calls per thread), same audio")
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="no latency probe call")
    parser.add_argument("--profile-calls", type=int, default=None,
                        help="run py-spy on the server during the window of this step")
    parser.add_argument("--stop-after", type=int, default=1,
                        help="stop after this many failing steps in a row")
    parser.add_argument("--quiet", type=float, default=0.3, metavar="CORES",
                        help="before each step wait (up to 3 min) for the machine to be "
                             "this idle")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="pin nothing (default: server on the last core, SIPp on the "
                             "others)")
    parser.add_argument("--sipp-anywhere", action="store_true",
                        help="pin only the server; SIPp may use every core (when one core "
                             "is not enough for the generator)")
    parser.add_argument("--tail-ms", type=int, default=500,
                        help="how long a caller holds the call after its audio should "
                             "have ended, before the BYE")
    add_package_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep configs, logs, recordings")
    return parser.parse_args()


def plays_for(n: int, args: argparse.Namespace) -> int:
    """Plays of the 7.08 s capture so that every call outlasts the ramp and the window."""
    needed = n / args.rate + ANNOUNCEMENT_SECONDS + 5 + args.window + 3
    return max(1, math.ceil(needed / PCAP_SECONDS))


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal whole shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_step(n: int, args: argparse.Namespace, sipp: str, base: Path,
             snapshot: Path | None) -> dict[str, Any]:
    server_cpus, sipp_cpus = default_pinning(args.pin)
    if args.sipp_anywhere:
        sipp_cpus = None
    step_dir = base / f"n{n}"
    plan = PortPlan(rtp_base=1100)
    # Per SIPp pair a block of 12 ports: +0 the server's SIP (first block only),
    # +1 callee SIP, +2 caller SIP, +4 callee media (+6 video), +8 caller media.
    blocks = [plan.fixed(12) for _ in range(args.pairs)]
    ports = blocks[0]
    setup = ANNOUNCEMENT_SECONDS if args.record else 0.0
    ramp = n / args.rate
    if args.idle:
        plays = 0
        hold_ms = int((ramp + setup + 5 + args.window + 3) * 1000)
        call_seconds = hold_ms / 1000 + setup
    else:
        plays = plays_for(n, args)
        hold_ms = args.tail_ms if args.audio == "pcap" else \
            int(plays * PCAP_SECONDS * 1000) + args.tail_ms
        call_seconds = plays * PCAP_SECONDS + args.tail_ms / 1000 + setup
    spec = ServerSpec(name=f"n{n}", sip_port=ports, rtp_range=plan.rtp_range(2 * n + 300),
                      storage=step_dir / "var", target_port=ports + 1, record=args.record,
                      inactivity_timeout=3600 if args.idle else 30,
                      extra_targets=tuple(b + 1 for b in blocks[1:]))
    numbers = spec.numbers()
    # DEBUG: each call logs its relay counters at its end (media_totals).
    server = Server(spec, step_dir, snapshot=snapshot, cpus=server_cpus,
                    log_level="info" if args.idle else "debug")
    if args.audio == "stream":
        args.ptime = 20
        media.prepare_stream_file(step_dir, plays)
    else:
        media.prepare_pcap_dir(step_dir, args.ptime)
    wait_for_quiet(args.quiet, 180)
    server.start()
    sampler = Sampler(1.0)
    sampler.add("server", server.pid, server=True)
    shares = split(n, args.pairs)
    callees = []
    for i, block in enumerate(blocks):
        callee = start_sipp(sipp, f"callee{i}", callee_args(block + 1, block + 4, shares[i] + 50),
                            step_dir, cpus=sipp_cpus, stat=False,
                            timeout=call_seconds + ramp + 300)
        sampler.add(f"callee{i}", callee.pid)
        callees.append(callee)
    sampler.start()
    row: dict[str, Any] = {"calls": n, "mode": "idle" if args.idle else "media",
                           "record": args.record, "ptime_ms": None if args.idle else args.ptime,
                           "audio": None if args.idle else args.audio, "sipp_pairs": args.pairs,
                           "plays": plays, "rate": args.rate, "window_s": args.window}
    try:
        warm = start_sipp(sipp, "warmup", caller_args(
            ports, ports + 2, ports + 8, scenario="load_caller.xml", rate=10,
            calls=WARMUP_CALLS, limit=10, hold_ms=200), step_dir, cpus=sipp_cpus,
            timeout=60)
        warm.wait(90)
        time.sleep(2)
        baseline = sampler.sample_now()
        row["baseline_rss_mib"] = baseline.procs["server"]["rss_kib"] / 1024
        row["baseline_fds"] = baseline.procs["server"]["fds"]
        log(f"n={n}: baseline RSS {row['baseline_rss_mib']:.1f} MiB, "
            f"{row['baseline_fds']:.0f} fds; {plays} plays, {hold_ms} ms hold, "
            f"{args.pairs} SIPp pair(s)")
        extra = [] if args.idle or args.audio == "stream" else ["-set", "plays", str(plays)]
        scenario = ("load_caller.xml" if args.idle else
                    "load_caller_stream.xml" if args.audio == "stream" else
                    "load_caller_pcap.xml")
        callers = []
        for i, block in enumerate(blocks):
            caller = start_sipp(sipp, f"caller{i}", caller_args(
                ports, block + 2, block + 8, scenario=scenario, rate=args.rate / args.pairs,
                calls=shares[i], limit=shares[i] + 10, hold_ms=hold_ms, extra=extra,
                number=numbers[i][0]), step_dir, cpus=sipp_cpus, rtt=True,
                timeout=call_seconds + ramp + 120)
            sampler.add(f"caller{i}", caller.pid)
            callers.append(caller)
        established = wait_established(callers, n, ramp + setup + 60)
        row["established"] = established
        time.sleep(2)
        row.update(measure_window(n, args, server, sampler, sipp_cpus))
        totals: dict[str, Any] = {"successful": 0, "failed": 0, "retransmissions": 0}
        failures: dict[str, int] = {}
        for i, caller in enumerate(callers):
            caller.wait(call_seconds + ramp + 150)
            sampler.remove(f"caller{i}")
            stats = caller.stats()
            for key in totals:
                totals[key] += stats.get(key) or 0
            for reason, count in stats.get("failures", {}).items():
                failures[reason] = failures.get(reason, 0) + count
            if caller.returncode:
                row.setdefault("caller_tails", []).append(caller.tail())
        row.update(totals)
        row["failures"] = failures
        suffixes = tuple(f"-{caller.pid}@127.0.0.1" for caller in callers)
        cdrs = wait_for_cdrs(server, totals["successful"],
                             lambda c: c.get("sip_call_id", "").endswith(suffixes))
        row["cdrs"] = len(cdrs)
        row["answered_cdrs"] = sum(c.get("disposition") == "answered" for c in cdrs)
        row["log"] = server.log_summary()
        if not args.idle:
            row["relay"] = relay_loss(media_totals(server.log_text(),
                                                   {c["call_id"] for c in cdrs}))
        if args.record:
            durations = {c["recording"]: float(c["duration"]) for c in cdrs
                         if c.get("recording")}
            files = [spec.storage / "recordings" / f"{rid}.wav" for rid in durations]
            row["recordings"] = media.analyse_recordings(files, durations, plays)
            row["recording_files_missing"] = sum(not f.exists() for f in files)
    finally:
        for callee in callees:
            callee.stop()
        row["server_exit"] = server.stop()
        sampler.stop()
        if not args.keep:
            shutil.rmtree(spec.storage / "recordings", ignore_errors=True)
    row["passed"] = passed(row, n, args)
    return row


def wait_established(callers: list[SippRun], count: int, timeout: float) -> int:
    """Wait until the callers have ``count`` answered calls (or the timeout).

    From SIPp's -trace_rtt ("answer": INVITE to 200, written per call): the
    server logs only a call's start and end at INFO, and running it at DEBUG
    would put the cost of logging every step into the measurement.
    """
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = sum(len(read_rtt(caller.rtt_file()).get("answer", [])) for caller in callers)
        if seen >= count:
            return seen
        time.sleep(0.5)
    log(f"only {seen} of {count} calls answered after {timeout:.0f}s")
    return seen


def measure_window(n: int, args: argparse.Namespace, server: Server, sampler: Sampler,
                   sipp_cpus: str | None) -> dict[str, Any]:
    """CPU, memory, fds, drops and probe latency while all N calls are up."""
    sampler.reset_drops()
    sampler.watch_drops = not args.idle
    kernel_before = udp_counters()
    probe_result: dict[str, Any] = {}
    prober = None
    if args.probe and not args.idle:
        def run_probe() -> None:
            probe_result.update(probe.measure(server.spec.sip_port, max(5.0, args.window - 6)))
        prober = threading.Thread(target=run_probe, name="probe", daemon=True)
        prober.start()
    recording = None
    if args.profile_calls == n:
        out_dir = RESULTS_DIR / "profiles"
        out_dir.mkdir(parents=True, exist_ok=True)
        raw = out_dir / f"concurrent-{'idle' if args.idle else 'media'}-{n}-" \
                        f"{time.strftime('%Y%m%dT%H%M%S')}.txt"
        recording = profiling.record(server.pid, args.window - 2, raw)
    start = time.monotonic()
    time.sleep(args.window)
    end = time.monotonic()
    kernel_after = udp_counters()
    sampler.watch_drops = False
    sampler.sample_now()
    if prober is not None:
        prober.join(args.window + 30)
    out: dict[str, Any] = {}
    cpu = sampler.cpu_share("server", start, end) or 0.0
    cpu_main = sampler.cpu_share("server", start, end, key="cpu_main") or 0.0
    labels = {label for sample in sampler.between(start, end) for label in sample.procs}
    caller_cpu = sum(sampler.cpu_share(label, start, end) or 0.0
                     for label in labels if label.startswith("caller"))
    callee_cpu = sum(sampler.cpu_share(label, start, end) or 0.0
                     for label in labels if label.startswith("callee"))
    busy = sampler.machine_share(start, end) or 0.0
    inside = sampler.between(start, end)
    rss = [s.procs["server"]["rss_kib"] for s in inside if "server" in s.procs]
    fds = [s.procs["server"]["fds"] for s in inside if "server" in s.procs]
    out["server_cpu_pct"] = 100 * cpu
    out["server_main_cpu_pct"] = 100 * cpu_main
    out["server_other_threads_cpu_pct"] = 100 * (cpu - cpu_main)
    out["cpu_s_per_call_s"] = cpu / n
    out["sipp_caller_cpu_pct"] = 100 * caller_cpu
    out["sipp_callee_cpu_pct"] = 100 * callee_cpu
    out["machine_busy_pct"] = 100 * busy
    out["others_cpu_pct"] = max(0.0, 100 * (busy - cpu - caller_cpu - callee_cpu))
    # The generator is the limit when SIPp's echo socket overflows (packets lost
    # before the server could see them) or SIPp has no CPU left: SIPp has the
    # cores the server is not pinned to, or what the server leaves.
    sipp_cores = (len(sipp_cpus.split(",")) if sipp_cpus else (os.cpu_count() or 1) - cpu)
    relayed = 2 * n * 1000 / (args.ptime or 20) * args.window
    drops = sampler.drops()
    callee_drops = sum(v for k, v in drops.items() if k.startswith("callee"))
    out["generator_limited"] = (caller_cpu + callee_cpu >= 0.85 * sipp_cores
                                or callee_drops > 0.0005 * relayed)
    out["us_per_relayed_packet"] = 1e6 * cpu / (2 * n * 1000 / args.ptime) if not args.idle \
        else None
    out["rss_mib"] = max(rss) / 1024 if rss else None
    out["fds"] = max(fds) if fds else None
    out["udp_drops_by_process"] = {
        "server": drops.get("server", 0), "callee": callee_drops,
        "caller": sum(v for k, v in drops.items() if k.startswith("caller"))}
    out["kernel_udp_delta"] = {k: kernel_after[k] - kernel_before.get(k, 0)
                               for k in ("InDatagrams", "InErrors", "RcvbufErrors",
                                         "SndbufErrors", "NoPorts")}
    out["probe"] = probe_result or None
    if recording is not None:
        path = recording.wait(args.window + 60)
        if path is not None:
            out["profile"] = profiling.analyse(path, rate=100, seconds=args.window - 2)
    return out


def relay_loss(totals: dict[str, float]) -> dict[str, Any]:
    """Packet loss per direction from the server's own counters (RFC 3550 lost,
    plus what arrived and was not forwarded), and the recording tap's drops.

    This is the loss the target is about. The recordings tell a second story
    (``recordings.*_loss``: loud samples missing against g711a.pcap), which
    also counts the recorder's drift corrections: when a sender's packets
    bunch up after a stall, the recorder keeps the channels on the wall clock
    by overlapping a few milliseconds (mediacore/rtp/recorder.py), and SIPp's
    rtpstream stalls under load.
    """
    out: dict[str, Any] = {"calls": int(totals.get("calls", 0))}
    for name in ("caller", "target"):
        expected = totals.get(f"{name}.expected", 0)
        packets = totals.get(f"{name}.packets", 0)
        missing = totals.get(f"{name}.lost", 0) + packets - totals.get(f"{name}.forwarded", 0)
        out[f"{name}_packets"] = int(packets)
        out[f"{name}_loss"] = missing / expected if expected else None
        calls = totals.get("calls", 0)
        out[f"{name}_jitter_ms_mean"] = (totals.get(f"{name}.jitter_ms", 0) / calls
                                         if calls else None)
        out[f"{name}_jitter_ms_max"] = totals.get(f"{name}.jitter_ms.max")
    recorded = totals.get("recorded", 0)
    dropped = totals.get("recording_dropped", 0)
    out["recording_dropped"] = int(dropped)
    out["recording_drop_rate"] = dropped / (recorded + dropped) if recorded + dropped else None
    out["recorder"] = {key.removeprefix("recorder."): int(value)
                       for key, value in totals.items() if key.startswith("recorder.")}
    return out


def passed(row: dict[str, Any], n: int, args: argparse.Namespace) -> bool:
    """No failed call, every CDR, loss under 0.1% each way, CPU under 90%."""
    ok = (row.get("failed") == 0 and row.get("successful") == n
          and row.get("answered_cdrs") == n)
    if not args.idle:
        relay = row.get("relay") or {}
        ok = ok and relay.get("calls") == n and all(
            relay.get(key) is not None and relay[key] < 0.001
            for key in ("caller_loss", "target_loss"))
    if args.record:
        recs = row.get("recordings") or {}
        ok = ok and recs.get("readable") == n
        if not args.idle:
            ok = ok and (row.get("relay") or {}).get("recording_drop_rate") == 0
    return bool(ok and (row.get("server_cpu_pct") or 0) < 90)


def summarise(row: dict[str, Any]) -> dict[str, Any]:
    """Derived per-call figures (memory, fds) against the step's baseline."""
    n = row["calls"]
    if row.get("rss_mib") is not None:
        row["rss_kib_per_call"] = (row["rss_mib"] - row["baseline_rss_mib"]) * 1024 / n
    if row.get("fds") is not None:
        row["fds_per_call"] = (row["fds"] - row["baseline_fds"]) / n
    return row


def _pct(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def print_row(row: dict[str, Any], *, header: bool) -> None:
    if row["mode"] == "idle":
        if header:
            print(f"\n### idle calls (no RTP), record={row['record']}\n")
            print("| calls | established | failed | RSS MiB (baseline) | KiB per call | "
                  "fds per call | server CPU % (main) | pass |")
            print("|---:|---:|---:|---:|---:|---:|---:|---|")
        print(f"| {row['calls']} | {row.get('established')} | {row.get('failed')} "
              f"| {row.get('rss_mib', 0):.1f} ({row['baseline_rss_mib']:.1f}) "
              f"| {row.get('rss_kib_per_call', 0):.1f} | {row.get('fds_per_call', 0):.2f} "
              f"| {row.get('server_cpu_pct', 0):.1f} ({row.get('server_main_cpu_pct', 0):.1f}) "
              f"| {'yes' if row['passed'] else 'NO'} |", flush=True)
        return
    if header:
        print(f"\n### concurrent recorded calls, {row['ptime_ms']} ms packets, "
              f"SIPp {row['audio']}\n")
        print("| calls | failed | server CPU % (main / threads) | CPU s per call-s | "
              "µs per relayed packet | KiB per call | SIPp CPU % (caller+callee) | "
              "RTP loss caller / target % | recording tap drops | "
              "recording deficit caller / callee % | drops at server / SIPp callee | "
              "probe RTT p50/p99 ms | recordings ok | pass |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    recs = row.get("recordings") or {}
    relay = row.get("relay") or {}
    probe_row = row.get("probe") or {}
    p50, p99 = probe_row.get("rtt_ms_p50"), probe_row.get("rtt_ms_p99")
    rtt = "-" if p50 is None or p99 is None else f"{p50:.2f}/{p99:.2f}"
    limited = " (generator-limited)" if row.get("generator_limited") else ""
    print(f"| {row['calls']} | {row.get('failed')} "
          f"| {row['server_cpu_pct']:.0f} ({row['server_main_cpu_pct']:.0f} / "
          f"{row['server_other_threads_cpu_pct']:.0f}) | {row['cpu_s_per_call_s']:.5f} "
          f"| {row.get('us_per_relayed_packet') or 0:.1f} "
          f"| {row.get('rss_kib_per_call', 0):.0f} "
          f"| {row['sipp_caller_cpu_pct']:.0f}+{row['sipp_callee_cpu_pct']:.0f}{limited} "
          f"| {_pct(relay.get('caller_loss'))} / {_pct(relay.get('target_loss'))} "
          f"| {relay.get('recording_dropped', '-')} "
          f"| {_pct(recs.get('caller_loss'))} / {_pct(recs.get('callee_loss'))} "
          f"| {row['udp_drops_by_process'].get('server', 0)} / "
          f"{row['udp_drops_by_process'].get('callee', 0)} | {rtt} "
          f"| {recs.get('readable', '-')}/{row['calls']} "
          f"| {'yes' if row['passed'] else 'NO'} |", flush=True)


def main() -> int:
    args = parse_args()
    sipp = require_sipp()
    payload = result_header(KIND, args)
    payload["reference_pcap"] = vars(media.reference())
    payload["rows"] = []
    with workdir(KIND, args.keep) as base:
        snapshot = prepare_package(args, base, payload)
        failing = 0
        try:
            for index, n in enumerate(args.calls):
                row = summarise(run_step(n, args, sipp, base, snapshot))
                payload["rows"].append(row)
                print_row(row, header=index == 0)
                failing = 0 if row["passed"] else failing + 1
                if failing >= args.stop_after:
                    log(f"{failing} failing step(s); stopping")
                    break
        finally:
            kind = f"{KIND}-idle" if args.idle else KIND
            write_result(kind, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
