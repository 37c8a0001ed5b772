"""Calls per second: a ramp of SIPp call rates through mediacore, to the first failure.

What a carrier's load tester does first: short calls (INVITE, 1 s hold,
BYE) at rising rates, each step 15 s, to find the highest rate with no
failed call. Two modes, each a ramp on a fresh server:

- ``anchored``: the number is not recorded and has no announcement, so a
  call is the B2BUA, two relay sessions (4 sockets) and a CDR;
- ``recorded``: ``record = true``, which plays the recording notice (2.43 s
  of early media, 183) before dialling, records the call to a WAV file and
  journals its handle. The caller (sipp-scenarios/load_caller.xml) accepts
  the 183 and sends no RTP.

Per step: offered and achieved rate, calls created / successful / failed
(with SIPp's reasons), the server's CPU (percent of one core over the
steady part of the step, and ms per call over the whole step, main thread
apart), peak RSS and fds, post-dial delay and answer time percentiles, and
whether the journal holds one CDR per successful call.

Between steps the ramp waits ``--gap`` seconds (default: the port
quarantine plus 2 s), so that each step starts with the same free ports:
the pool quarantines a released pair for 30 s (mediacore/rtp/ports.py),
which at these rates needs more pairs than the steps themselves.

``--servers 2`` runs two servers side by side (one per core, each with its
own SIP port, RTP range and storage dir, the same Redis with ``--redis``),
each driven by its own SIPp caller/callee pair at the step's rate: the
combined figure is the sum.

    .venv/bin/python -m benchmarks.load.cps                       # both modes, ~15 min
    .venv/bin/python -m benchmarks.load.cps --modes anchored --rates 300 500 --seconds 10
    .venv/bin/python -m benchmarks.load.cps --servers 2 --redis --modes anchored
    .venv/bin/python -m benchmarks.load.cps --modes anchored --rates 500 --profile-rate 500
    .venv/bin/python -m benchmarks.load.cps --modes anchored --rates 500 --metrics

``--metrics`` gives each server a ``[metrics] listen`` and scrapes its
/metrics every second through the steps, as Prometheus would: run it
alternately with a run without, to see what metrics cost per call.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load import profiling
from benchmarks.load.common import (
    ANNOUNCEMENT_SECONDS,
    PORT_QUARANTINE,
    RESULTS_DIR,
    PortPlan,
    Redis,
    Sampler,
    Scraper,
    Server,
    ServerSpec,
    SippRun,
    add_package_arguments,
    callee_args,
    caller_args,
    cpu_seconds,
    default_pinning,
    log,
    pairs_for,
    prepare_package,
    read_rtt,
    require_sipp,
    result_header,
    rtt_summary,
    start_sipp,
    thread_cpu,
    udp_port_drops,
    wait_for_cdrs,
    wait_for_quiet,
    workdir,
    write_result,
)

KIND = "cps"


@dataclass
class Lane:
    """One server with its own SIPp callee; callers come and go per step."""

    index: int
    server: Server
    callee: SippRun
    caller_port: int
    caller_media: int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", choices=("anchored", "recorded"),
                        default=["anchored", "recorded"])
    parser.add_argument("--rates", type=int, nargs="+",
                        default=[50, 100, 200, 300, 400, 500, 600])
    parser.add_argument("--seconds", type=int, default=15, help="length of each step")
    parser.add_argument("--hold-ms", type=int, default=1000, help="talk time of each call")
    parser.add_argument("--gap", type=float, default=PORT_QUARANTINE + 2,
                        help="pause between steps (seconds); the default lets an older "
                             "version's quarantined ports return")
    parser.add_argument("--port-range", type=int, nargs=2, metavar=("FIRST", "LAST"),
                        help="the server's rtp.port_range instead of one sized for the "
                             "load (e.g. the default 20000 29999, to see the quarantine bite)")
    parser.add_argument("--servers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--redis", action="store_true", help="start a redis-server and "
                        "publish CDRs to it (checked with XLEN)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the server(s) and SIPp to cores")
    parser.add_argument("--quiet", type=float, default=0.3, metavar="CORES",
                        help="before each step wait (up to 3 min) until the machine's busy "
                             "CPU is at most this many cores")
    parser.add_argument("--stop-after", type=int, default=2,
                        help="end a ramp after this many failing steps in a row")
    parser.add_argument("--profile-rate", type=int, default=None,
                        help="run py-spy on the server during the step at this rate")
    parser.add_argument("--metrics", action="store_true",
                        help="serve [metrics] and scrape /metrics every second during the run")
    add_package_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    return parser.parse_args()


def call_seconds(mode: str, hold_ms: int) -> float:
    """How long one call holds its ports: announcement (recorded) + hold + set-up."""
    return hold_ms / 1000 + (ANNOUNCEMENT_SECONDS if mode == "recorded" else 0) + 0.5


def run_mode(mode: str, args: argparse.Namespace, sipp: str, base: Path,
             snapshot: Path | None, redis: Redis | None) -> list[dict[str, Any]]:
    record = mode == "recorded"
    seconds_per_call = call_seconds(mode, args.hold_ms)
    plan = PortPlan(rtp_base=1100)
    pairs = pairs_for(max(args.rates), seconds_per_call, args.seconds)
    server_cpus, sipp_cpus = default_pinning(args.pin)
    lanes: list[Lane] = []
    sampler = Sampler(1.0).start()
    rows: list[dict[str, Any]] = []
    scrapers: list[Scraper] = []
    try:
        for index in range(args.servers):
            ports = plan.fixed(12)  # SIP: server, callee, caller; media: 4 each
            rtp_range = plan.rtp_range(pairs)
            if args.port_range:
                rtp_range = (args.port_range[0] + index * 10000, args.port_range[1] + index * 10000)
            spec = ServerSpec(
                name=f"{mode}-{index}", sip_port=ports, rtp_range=rtp_range,
                storage=base / f"{mode}-{index}" / "var", target_port=ports + 1,
                record=record, redis_url=redis.url if redis else None,
                node=f"load-{index}", metrics_port=plan.fixed(1) if args.metrics else None)
            cpus = server_cpus
            if args.servers > 1:  # one server per core; SIPp floats over both
                cpus = str(index % (os.cpu_count() or 1)) if args.pin else None
            server = Server(spec, base / f"{mode}-{index}", snapshot=snapshot, cpus=cpus)
            server.start()
            sampler.add(f"server{index}", server.pid, server=True)
            total_calls = sum(args.rates) * args.seconds * 2
            budget = (len(args.rates) * (args.seconds + args.gap + 90)) + 120
            callee = start_sipp(sipp, f"callee{index}",
                                callee_args(ports + 1, ports + 4, total_calls),
                                base / f"{mode}-{index}",
                                cpus=None if args.servers > 1 else sipp_cpus,
                                stat=False, timeout=budget)
            sampler.add(f"callee{index}", callee.pid)
            lanes.append(Lane(index, server, callee, ports + 2, ports + 8))
            if spec.metrics_port is not None:
                scrapers.append(Scraper(f"http://127.0.0.1:{spec.metrics_port}/metrics").start())
            log(f"{mode}: server {index} pid {server.pid} on cpus {cpus or 'any'}, "
                f"sip {spec.sip_port}, rtp {spec.rtp_range[0]}-{spec.rtp_range[1]}")
        time.sleep(1.0)
        failing = 0
        for number, rate in enumerate(args.rates):
            row = run_step(mode, rate, args, sipp, lanes, sampler, seconds_per_call,
                           sipp_cpus if args.servers == 1 else None, redis)
            rows.append(row)
            print_row(row, header=number == 0)
            failing = 0 if row["passed"] else failing + 1
            if failing >= args.stop_after:
                log(f"{mode}: {failing} failing steps in a row; ramp ends")
                break
            if number + 1 < len(args.rates):
                time.sleep(args.gap)
    finally:
        for number, scraper in enumerate(scrapers):
            scraped = scraper.stop()
            log(f"{mode}: server {number} scraped {scraped}")
            for row in rows:
                row.setdefault("scrapes", []).append(scraped)
        for lane in lanes:
            lane.callee.stop()
            code = lane.server.stop()
            log(f"{mode}: server {lane.index} exit {code}")
        sampler.stop()
    return rows


def run_step(mode: str, rate: int, args: argparse.Namespace, sipp: str, lanes: list[Lane],
             sampler: Sampler, seconds_per_call: float, sipp_cpus: str | None,
             redis: Redis | None) -> dict[str, Any]:
    calls = rate * args.seconds
    limit = max(200, int(rate * seconds_per_call * 3))
    quiet = wait_for_quiet(args.quiet, 180)
    log(f"{mode}: {rate} cps x {args.seconds} s = {calls} calls per server "
        f"x {len(lanes)} server(s)")
    before = {lane.index: (cpu_seconds(lane.server.pid), thread_cpu(lane.server.pid),
                           udp_port_drops(lane.server.spec.sip_port))
              for lane in lanes}
    log_offsets = {lane.index: len(lane.server.log_text()) for lane in lanes}
    xlen_before = redis.xlen("mediacore:cdr") if redis else None
    start = time.monotonic()
    callers = []
    for lane in lanes:
        caller = start_sipp(
            sipp, f"caller{lane.index}-{mode}-{rate}",
            caller_args(lane.server.spec.sip_port, lane.caller_port, lane.caller_media,
                        scenario="load_caller.xml", rate=rate, calls=calls, limit=limit,
                        hold_ms=args.hold_ms),
            lane.server.workdir, cpus=sipp_cpus, rtt=True,
            timeout=args.seconds + seconds_per_call + 60)
        sampler.add(f"caller{lane.index}", caller.pid)
        callers.append(caller)
    profile = None
    if args.profile_rate == rate:
        profile = start_profile(mode, rate, lanes[0], args, seconds_per_call)
    for lane, caller in zip(lanes, callers, strict=True):
        caller.wait(args.seconds + seconds_per_call + 90)
        sampler.remove(f"caller{lane.index}")
    done = time.monotonic()
    steady = (start + seconds_per_call + 1, start + args.seconds)
    per_lane = []
    for lane, caller in zip(lanes, callers, strict=True):
        per_lane.append(lane_row(lane, caller, before[lane.index], log_offsets[lane.index],
                                 sampler, start, done, steady, calls))
    row: dict[str, Any] = {"mode": mode, "offered_cps": rate * len(lanes),
                           "seconds": args.seconds, "hold_ms": args.hold_ms,
                           "busy_before_step_cores": quiet, "servers": per_lane}
    for key in ("calls", "created", "successful", "failed", "cdrs", "answered_cdrs",
                "cdrs_hangup_by_caller_at_hold", "sip_socket_drops", "errors_logged",
                "no_media_503"):
        row[key] = sum(lane[key] for lane in per_lane)
    row["achieved_cps"] = sum(lane["achieved_cps"] or 0 for lane in per_lane)
    row["server_cpu_pct"] = sum(lane["cpu_pct"] or 0 for lane in per_lane)
    row["cpu_ms_per_call"] = (sum(lane["cpu_s"] for lane in per_lane) * 1000
                              / max(row["successful"], 1))
    row["rss_mib"] = sum(lane["rss_peak_mib"] or 0 for lane in per_lane)
    row["fds"] = sum(lane["fds_peak"] or 0 for lane in per_lane)
    row["sipp_cpu_pct"] = sum(lane["caller_cpu_pct"] + (lane["callee_cpu_pct"] or 0)
                              for lane in per_lane)
    busy = sampler.machine_share(*steady)
    row["machine_busy_pct"] = None if busy is None else 100 * busy
    row["others_cpu_pct"] = (None if busy is None else
                             max(0.0, 100 * busy - row["server_cpu_pct"] - row["sipp_cpu_pct"]))
    row["answer_ms_p50"] = max((lane["answer_ms"].get("p50") or 0) for lane in per_lane)
    row["answer_ms_p99"] = max((lane["answer_ms"].get("p99") or 0) for lane in per_lane)
    row["pdd_ms_p99"] = max((lane["pdd_ms"].get("p99") or 0) for lane in per_lane)
    if redis is not None:
        time.sleep(2)
        row["redis_cdr_stream_added"] = redis.xlen("mediacore:cdr") - (xlen_before or 0)
    row["passed"] = all(lane["passed"] for lane in per_lane)
    if profile is not None:
        row["profile"] = profile
    return row


def start_profile(mode: str, rate: int, lane: Lane, args: argparse.Namespace,
                  seconds_per_call: float) -> dict[str, Any] | None:
    """py-spy over the steady part of the step (blocking mode: a few % slower)."""
    delay = seconds_per_call + 1
    length = max(3, int(args.seconds - delay - 1))
    time.sleep(delay)
    out_dir = RESULTS_DIR / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"cps-{mode}-{rate}-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    recording = profiling.record(lane.server.pid, length, raw)
    if recording is None:
        log("py-spy not found; no profile")
        return None
    if recording.wait(length + 60) is None:
        return {"error": f"py-spy wrote nothing; see {raw.with_suffix('.log')}"}
    analysis = profiling.analyse(raw, rate=100, seconds=length)
    analysis["seconds"] = length
    return analysis


def lane_row(lane: Lane, caller: SippRun, before: tuple[float, dict[int, float], int],
             log_offset: int, sampler: Sampler, start: float, done: float,
             steady: tuple[float, float], calls: int) -> dict[str, Any]:
    pid = lane.server.pid
    cpu_total = cpu_seconds(pid) - before[0]
    threads = thread_cpu(pid)
    cpu_main = threads.get(pid, 0.0) - before[1].get(pid, 0.0)
    stats = caller.stats()
    rtt = rtt_summary(read_rtt(caller.rtt_file()))
    suffix = f"-{caller.pid}@127.0.0.1"
    cdrs = wait_for_cdrs(lane.server, stats["successful"],
                         lambda c: c.get("sip_call_id", "").endswith(suffix))
    answered = sum(c.get("disposition") == "answered" for c in cdrs)
    # A CDR is right when the caller hung up after about the hold time: a call
    # whose ACK or BYE the server lost ends "by system" with the wrong duration.
    hold = args_hold_s(caller)
    cdr_ok = sum(c.get("disposition") == "answered" and c.get("hangup_by") == "caller"
                 and abs(float(c.get("duration") or 0) - hold) < 1.0 for c in cdrs)
    summary = lane.server.log_summary(log_offset)
    label = f"server{lane.index}"
    cpu = sampler.cpu_share(label, *steady)
    cpu_main_share = sampler.cpu_share(label, *steady, key="cpu_main")
    callee_cpu = sampler.cpu_share(f"callee{lane.index}", *steady)
    wall = max(done - start, 1e-6)
    passed = (stats["failed"] == 0 and stats["successful"] == calls and answered == calls
              and cdr_ok == calls)
    return {
        "server": lane.index,
        "calls": calls,
        "created": stats["created"],
        "successful": stats["successful"],
        "failed": stats["failed"],
        "failures": stats.get("failures", {}),
        "retransmissions": stats.get("retransmissions"),
        "achieved_cps": rtt.get("achieved_cps"),
        "pdd_ms": rtt.get("ringing", {}),
        "answer_ms": rtt.get("answer", {}),
        "cpu_s": cpu_total,
        "cpu_main_s": cpu_main,
        "cpu_pct": None if cpu is None else 100 * cpu,
        "cpu_main_pct": None if cpu_main_share is None else 100 * cpu_main_share,
        "cpu_pct_whole_step": 100 * cpu_total / wall,
        "rss_peak_mib": _mib(sampler.peak(label, "rss_kib", start, done)),
        "rss_end_mib": _mib(sampler.peak(label, "rss_kib", done - 1.5, done + 1)),
        "fds_peak": sampler.peak(label, "fds", start, done),
        "cdrs": len(cdrs),
        "answered_cdrs": answered,
        "cdrs_hangup_by_caller_at_hold": cdr_ok,
        "sip_socket_drops": udp_port_drops(lane.server.spec.sip_port) - before[2],
        "errors_logged": summary["errors"],
        "tracebacks": summary["tracebacks"],
        "warnings_logged": summary["warnings"],
        "no_media_503": summary["no_media_503"],
        "first_errors": summary["first_errors"][:2],
        "caller_cpu_pct": 100 * (caller.cpu or 0.0) / max((caller.ended or done) - start, 1e-6),
        "callee_cpu_pct": None if callee_cpu is None else 100 * callee_cpu,
        "caller_returncode": caller.returncode,
        "passed": passed,
    }


def args_hold_s(caller: SippRun) -> float:
    """The hold time SIPp was given (-d, ms), in seconds."""
    command = caller.command
    return int(command[command.index("-d") + 1]) / 1000 if "-d" in command else 0.0


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_row(row: dict[str, Any], *, header: bool) -> None:
    if header:
        print(f"\n### {row['mode']}\n")
        print("| offered cps | achieved cps | calls | successful | failed | CDRs (right) | "
              "server CPU % (main) | CPU ms/call | RSS MiB | fds | answer p50/p99 ms | "
              "SIP socket drops | 503s | SIPp CPU % | others CPU % | errors logged | pass |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
              "|---|")
    main = sum(lane["cpu_main_pct"] or 0 for lane in row["servers"])
    print(f"| {row['offered_cps']} | {_fmt(row['achieved_cps'])} | {row['calls']:,} "
          f"| {row['successful']:,} | {row['failed']:,} | {row['answered_cdrs']:,} "
          f"({row['cdrs_hangup_by_caller_at_hold']:,}) "
          f"| {_fmt(row['server_cpu_pct'])} ({_fmt(main)}) | {_fmt(row['cpu_ms_per_call'], 2)} "
          f"| {_fmt(row['rss_mib'])} | {_fmt(row['fds'])} "
          f"| {_fmt(row['answer_ms_p50'])}/{_fmt(row['answer_ms_p99'])} "
          f"| {row['sip_socket_drops']:,} | {row['no_media_503']:,} "
          f"| {_fmt(row['sipp_cpu_pct'])} | {_fmt(row['others_cpu_pct'])} "
          f"| {row['errors_logged']} | {'yes' if row['passed'] else 'NO'} |", flush=True)


def main() -> int:
    args = parse_args()
    sipp = require_sipp()
    payload = result_header(KIND, args)
    payload["ramps"] = {}
    with workdir(KIND, args.keep) as base:
        snapshot = prepare_package(args, base, payload)
        redis = None
        if args.redis:
            redis = Redis(base / "redis")
            redis.start()
        try:
            for mode in args.modes:
                payload["ramps"][mode] = run_mode(mode, args, sipp, base, snapshot, redis)
                passing = [r["offered_cps"] for r in payload["ramps"][mode] if r["passed"]]
                log(f"{mode}: highest passing offered rate: {max(passing) if passing else None}")
        finally:
            if redis is not None:
                redis.stop()
            write_result(KIND if args.servers == 1 else f"{KIND}-x{args.servers}", payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
