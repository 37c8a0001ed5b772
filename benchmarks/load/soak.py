"""Soak: a steady, moderate load for minutes; memory and fds must not grow.

A server that is fast for 15 seconds and leaks a few KiB per call dies in
a week. So: one server, a steady stream of recorded calls (by default 20
calls/s, each playing the 7 s of g711a.pcap's audio after the 2.4 s
recording notice, about 200 calls up at a time) for ``--minutes``
(default 10), with RSS, fds, threads and CPU sampled every ``--sample``
seconds. Reported: the least-squares slope of RSS and fds over the steady
part (after the first ``--warmup`` seconds, until the last call starts), per
minute and per 1,000 calls, the counts at the end of the load, and after
``--settle`` seconds of no load (the port quarantine is 30 s) against the
baseline before the load. Every call must succeed and leave a CDR.

``--long-call`` keeps one more call up for the whole soak (with an RTP
packet every 2 s, so inactivity does not end it): real traffic always has
some long calls, and per-call state that is only released "in order" stays
behind them.

    .venv/bin/python -m benchmarks.load.soak                  # 10 min + ~2 min set-up/settle
    .venv/bin/python -m benchmarks.load.soak --minutes 3
    .venv/bin/python -m benchmarks.load.soak --minutes 5 --long-call
    .venv/bin/python -m benchmarks.load.soak --signalling --rate 50 --hold 2   # no audio
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load import media
from benchmarks.load.common import (
    ANNOUNCEMENT_SECONDS,
    PCAP_SECONDS,
    PortPlan,
    Sampler,
    Server,
    ServerSpec,
    add_package_arguments,
    callee_args,
    caller_args,
    default_pinning,
    log,
    pairs_for,
    prepare_package,
    require_sipp,
    result_header,
    slope_per_minute,
    start_sipp,
    wait_for_cdrs,
    wait_for_quiet,
    workdir,
    write_result,
)
from benchmarks.load.probe import LatencyProbe

KIND = "soak"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--signalling", action="store_true",
                        help="calls without audio (load_caller.xml) held for --hold s")
    parser.add_argument("--hold", type=float, default=2.0,
                        help="hold time of --signalling calls (seconds)")
    parser.add_argument("--no-record", dest="record", action="store_false")
    parser.add_argument("--ptime", type=int, choices=(20, 30), default=20)
    parser.add_argument("--long-call", action="store_true",
                        help="keep one extra call up for the whole soak")
    parser.add_argument("--max-duration", type=float, default=7200.0,
                        help="the number's max_duration (seconds)")
    parser.add_argument("--heapwatch", action="store_true",
                        help="run the server under benchmarks/load/heapwatch.py and take a "
                             "census of live objects at the baseline, the end and after "
                             "settling")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="with --heapwatch: trace Python allocations (PYTHONTRACEMALLOC; "
                             "slows the server 2-3x) and report the lines that grew")
    parser.add_argument("--sample", type=float, default=10.0, help="sampling interval (s)")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds of load left out of the slopes")
    parser.add_argument("--settle", type=float, default=45.0,
                        help="seconds after the load before the final counts")
    parser.add_argument("--quiet", type=float, default=0.3, metavar="CORES")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    add_package_arguments(parser)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--rescore", type=Path, metavar="RESULT",
                        help="run nothing: score a saved result (benchmarks/results/soak-*.json) "
                             "again with this version's steady window and checks")
    return parser.parse_args()


def run(args: argparse.Namespace, sipp: str, base: Path, snapshot: Path | None
        ) -> dict[str, Any]:
    server_cpus, sipp_cpus = default_pinning(args.pin)
    plan = PortPlan(rtp_base=1100)
    ports = plan.fixed(12)
    setup = ANNOUNCEMENT_SECONDS if args.record else 0.0
    call_seconds = (args.hold if args.signalling else PCAP_SECONDS + 0.5) + setup
    load_seconds = args.minutes * 60
    calls = int(args.rate * load_seconds)
    spec = ServerSpec(name="soak", sip_port=ports,
                      rtp_range=plan.rtp_range(pairs_for(args.rate, call_seconds, load_seconds)),
                      storage=base / "var", target_port=ports + 1, record=args.record,
                      max_duration=args.max_duration)
    server = Server(spec, base, snapshot=snapshot, cpus=server_cpus,
                    heapwatch=base / "heap" if args.heapwatch else None,
                    env={"PYTHONTRACEMALLOC": str(args.tracemalloc)} if args.tracemalloc else None)
    if not args.signalling:
        media.prepare_pcap_dir(base, args.ptime)
    wait_for_quiet(args.quiet, 180)
    server.start()
    sampler = Sampler(args.sample)
    sampler.add("server", server.pid, server=True)
    callee = start_sipp(sipp, "callee", callee_args(ports + 1, ports + 4, calls + 100), base,
                        cpus=sipp_cpus, stat=False,
                        timeout=load_seconds + call_seconds + args.settle + 300)
    sampler.add("callee", callee.pid)
    result: dict[str, Any] = {"calls": calls, "call_seconds": call_seconds,
                              "config": spec.toml()}
    long_call: dict[str, Any] = {}
    try:
        warm = start_sipp(sipp, "warmup", caller_args(
            ports, ports + 2, ports + 8, scenario="load_caller.xml", rate=10, calls=5,
            limit=10, hold_ms=200), base, cpus=sipp_cpus, timeout=60)
        warm.wait(90)
        time.sleep(2)
        sampler.start()
        time.sleep(args.sample)
        t0 = time.monotonic()
        censuses = {"baseline": server.census()}
        baseline = sampler.sample_now().procs["server"]
        log(f"baseline RSS {baseline['rss_kib'] / 1024:.1f} MiB, {baseline['fds']:.0f} fds; "
            f"{calls} calls at {args.rate:g}/s over {args.minutes:g} min")
        long_thread = None
        if args.long_call:
            long_thread = threading.Thread(
                target=hold_long_call, args=(spec.sip_port, load_seconds + 5, long_call),
                name="long-call", daemon=True)
            long_thread.start()
        if args.signalling:
            scenario, hold_ms, extra = "load_caller.xml", int(args.hold * 1000), []
        else:
            scenario, hold_ms, extra = "load_caller_pcap.xml", 500, ["-set", "plays", "1"]
        caller = start_sipp(sipp, "caller", caller_args(
            ports, ports + 2, ports + 8, scenario=scenario, rate=args.rate, calls=calls,
            limit=int(args.rate * call_seconds * 3) + 50, hold_ms=hold_ms, extra=extra),
            base, cpus=sipp_cpus, timeout=load_seconds + call_seconds + 120)
        sampler.add("caller", caller.pid)
        load_start = time.monotonic()
        caller.wait(load_seconds + call_seconds + 180)
        load_end = time.monotonic()
        sampler.remove("caller")
        censuses["end_of_load"] = server.census()
        if long_thread is not None:
            long_thread.join(60)
        stats = caller.stats()
        log(f"load over: {stats['successful']} successful, {stats['failed']} failed; "
            f"settling {args.settle:.0f}s")
        time.sleep(args.settle)
        final = sampler.sample_now().procs["server"]
        censuses["after_settle"] = server.census()
        suffix = f"-{caller.pid}@127.0.0.1"
        cdrs = wait_for_cdrs(server, stats["successful"],
                             lambda c: c.get("sip_call_id", "").endswith(suffix))
        series = sampler.series(t0)
        result.update({
            "successful": stats["successful"], "failed": stats["failed"],
            "failures": stats.get("failures", {}),
            "caller_returncode": caller.returncode,
            "caller_tail": caller.tail() if caller.returncode else [],
            "cdrs": len(cdrs),
            "answered_cdrs": sum(c.get("disposition") == "answered" for c in cdrs),
            "load_seconds_actual": load_end - load_start,
            "baseline": baseline, "final_after_settle": final,
            **steady_figures(series, load_start - t0, load_seconds, args.warmup, args.rate,
                             load_end - t0),
            "server_cpu_pct": 100 * (sampler.cpu_share("server", load_start + args.warmup,
                                                       load_end) or 0.0),
            "log": server.log_summary(),
            "long_call": long_call or None,
            "series": series,
            "marks": {"load_start": load_start - t0, "load_end": load_end - t0},
        })
        if args.heapwatch:
            result["heap"] = heap_growth(censuses)
    finally:
        callee.stop()
        result["server_exit"] = server.stop()
        sampler.stop()
    return result


def hold_long_call(server_port: int, seconds: float, out: dict[str, Any]) -> None:
    """One call up for ``seconds``, an RTP packet every 2 s (not idle), then BYE."""
    call = LatencyProbe(server_port, interval=2.0)
    try:
        out["answered"] = call.call()
        if out["answered"]:
            call.run(seconds)
            out.update(call.summary())
            out["hung_up"] = call.hang_up()
    finally:
        call.close()


def heap_growth(censuses: dict[str, Any]) -> dict[str, Any]:
    """Live objects by type at each census, and the types that grew the most."""
    counts = {name: dict(c["top"]) | c.get("mediacore", {})
              for name, c in censuses.items() if c}
    base = counts.get("baseline", {})
    settled = counts.get("after_settle", {})
    growth = sorted(((k, settled.get(k, 0) - base.get(k, 0)) for k in settled),
                    key=lambda kv: -kv[1])[:25]
    traced = {name: {line: size for line, size, _ in c.get("tracemalloc_top", [])}
              for name, c in censuses.items() if c}
    lines_grew = []
    if traced.get("baseline") and traced.get("after_settle"):
        before, after = traced["baseline"], traced["after_settle"]
        lines_grew = sorted(((line, size - before.get(line, 0)) for line, size in after.items()),
                            key=lambda kv: -kv[1])[:20]
    return {"objects": {name: c["objects"] for name, c in censuses.items() if c},
            "traced_bytes": {name: c.get("tracemalloc_total")
                             for name, c in censuses.items() if c},
            "traced_lines_grew_most": lines_grew,
            "grew_most_after_settle": growth,
            "mediacore_types": {name: c.get("mediacore") for name, c in censuses.items() if c}}


def steady_figures(series: list[dict[str, Any]], load_start: float, load_seconds: float,
                   warmup: float, rate: float, load_end: float | None = None
                   ) -> dict[str, Any]:
    """Slopes of the server's RSS and fds over the steady part of the load.

    Steady: after the warm-up, while new calls still come (``load_seconds``
    from the start). The caller exits only once its last calls have ended,
    and counting those seconds (fds falling back to the baseline) read as
    shrinking: the 40-minute run of 2026-12-03 failed on that alone. A caller
    that exited early (``load_end``) ends the window there.
    """
    end = load_start + load_seconds if load_end is None else \
        min(load_end, load_start + load_seconds)
    steady = [(s["t"], s["procs"]["server"]) for s in series
              if load_start + warmup <= s["t"] <= end and "server" in s["procs"]]
    rss_slope = slope_per_minute([(t, p["rss_kib"]) for t, p in steady])
    return {
        "steady_first": steady[0][1] if steady else None,
        "steady_last": steady[-1][1] if steady else None,
        "rss_slope_kib_per_min": rss_slope,
        "rss_kib_per_1000_calls": None if rss_slope is None else rss_slope / (rate * 60) * 1000,
        "fds_slope_per_min": slope_per_minute([(t, p["fds"]) for t, p in steady]),
        "threads_max": max((p["threads"] for _, p in steady), default=None),
    }


def rescore(path: Path) -> int:
    """Score a saved soak result again with this version's steady window and checks."""
    payload = json.loads(path.read_text())
    result, arguments = payload["result"], payload["arguments"]
    result.update(steady_figures(result["series"], result["marks"]["load_start"],
                                 arguments["minutes"] * 60, arguments["warmup"],
                                 arguments["rate"], result["marks"]["load_end"]))
    result["verdict"] = verdict(result)
    payload["rescored"] = {"by": " ".join([".venv/bin/python -m benchmarks.load.soak",
                                           *sys.argv[1:]]),
                           "at": datetime.now(UTC).isoformat(timespec="seconds")}
    print_result(result)
    write_result(KIND, payload)
    return 0


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Pass when every call worked and neither memory nor fds kept growing."""
    slope = result.get("rss_slope_kib_per_min")
    fds_slope = result.get("fds_slope_per_min")
    baseline, final = result.get("baseline") or {}, result.get("final_after_settle") or {}
    checks = {
        "no_failed_calls": result.get("failed") == 0
        and result.get("successful") == result.get("calls"),
        "one_cdr_per_call": result.get("answered_cdrs") == result.get("successful"),
        "rss_flat": slope is not None and slope < 100,
        "fds_flat": fds_slope is not None and abs(fds_slope) < 1,
        "fds_back_to_baseline": bool(final) and final.get("fds", 0) <= baseline.get("fds", 0) + 5,
    }
    return {"checks": checks, "passed": all(checks.values())}


def print_result(result: dict[str, Any]) -> None:
    base, final = result["baseline"], result["final_after_settle"]
    first, last = result.get("steady_first") or {}, result.get("steady_last") or {}
    print("\n| calls | failed | CDRs | server CPU % | RSS MiB: baseline / steady start / "
          "end of load / after settle | RSS slope KiB/min (per 1,000 calls) | fds: baseline / "
          "end of load / after settle | fds slope /min | pass |")
    print("|---:|---:|---:|---:|---|---:|---|---:|---|")
    mib = [f"{p.get('rss_kib', 0) / 1024:.1f}" for p in (base, first, last, final)]
    slope = result.get("rss_slope_kib_per_min")
    per_k = result.get("rss_kib_per_1000_calls")
    print(f"| {result['calls']:,} | {result['failed']} | {result['answered_cdrs']:,} "
          f"| {result['server_cpu_pct']:.0f} | {' / '.join(mib)} "
          f"| {slope or 0:.0f} ({per_k or 0:.0f}) "
          f"| {base.get('fds', 0):.0f} / {last.get('fds', 0):.0f} / {final.get('fds', 0):.0f} "
          f"| {result.get('fds_slope_per_min') or 0:.2f} "
          f"| {'yes' if result['verdict']['passed'] else 'NO'} |", flush=True)


def main() -> int:
    args = parse_args()
    if args.rescore is not None:
        return rescore(args.rescore)
    sipp = require_sipp()
    payload = result_header(KIND, args)
    with workdir(KIND, args.keep) as base:
        snapshot = prepare_package(args, base, payload)
        try:
            payload["result"] = run(args, sipp, base, snapshot)
            payload["result"]["verdict"] = verdict(payload["result"])
            print_result(payload["result"])
        finally:
            write_result(KIND, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
