"""A scanner flood during live recorded calls: what the carrier's calls feel, what it costs.

Issue 14's attack, as a load run on loopback: the server trusts 127.0.0.1/32
only (the carrier, SIPp); a SIPp caller places recorded calls with audio at
``--cps`` (default 4) calls/s, each about 10 s long (the 2.43 s recording
notice, 7.08 s of g711a.pcap, a short hold), so about 40 calls are up at
any time; once ``--warmup`` and ``--baseline`` seconds have passed, a flood
of ``--rate`` (default 10,000) INVITEs a second from 127.0.0.66
(benchmarks/load/floodgen.py, each a new request, as a scanner sends them)
hits the SIP port for ``--flood`` seconds; the calls go on for ``--after``
seconds (default 60) more. One run, one server: the baseline window is the
unflooded figure, the flood window the flooded one.

Per window (baseline, flood, after): the carrier calls that started in it,
their setup time (SIPp's INVITE to 200 OK, which includes the notice, and
INVITE to 183, the server's own reaction), the server's CPU (main thread
apart), its RSS. Over the run: every carrier call successful or not, the
flood's achieved rate and the answers it got, the server's SIP socket
drops, its log growth during the flood, and its refusal counters
(/metrics). The target (issue 14): every carrier call succeeds, setup
within 100 ms of the baseline, RSS within 10% of the baseline a minute
after the flood.

    .venv/bin/python -m benchmarks.load.flood                        # ~2.5 min
    .venv/bin/python -m benchmarks.load.flood --untrusted drop
    .venv/bin/python -m benchmarks.load.flood --rate 30000 --flood 20 --after 30
    .venv/bin/python -m benchmarks.load.flood --package /tmp/old    # an older checkout

The server runs on the last core, SIPp and the flood generator on the
other(s) (``--no-pin`` to let them float); the machine is shared, so every
result records what others used beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.load import media
from benchmarks.load.common import (
    ANNOUNCEMENT_SECONDS,
    PCAP_SECONDS,
    PYTHON,
    PortPlan,
    Sampler,
    Server,
    ServerSpec,
    add_package_arguments,
    callee_args,
    caller_args,
    default_pinning,
    log,
    percentile,
    prepare_package,
    read_rtt,
    require_sipp,
    result_header,
    snapshot_env,
    start_sipp,
    udp_port_drops,
    wait_for_quiet,
    workdir,
    write_result,
)

KIND = "flood"
#: After the audio, the caller holds this long before its BYE.
HOLD_MS = 500
#: What the issue asks of a flooded run against its baseline.
SETUP_MARGIN_MS = 100.0
RSS_MARGIN = 0.10
#: Refusal counters read from /metrics.
_COUNTERS = re.compile(r"^(mediacore_sip_refused_messages_total|"
                       r"mediacore_sip_refusal_answers_total|mediacore_calls_refused_total|"
                       r"mediacore_sip_transactions|mediacore_sip_requests_received_total|"
                       r"mediacore_sip_udp_datagrams_received_total)"
                       r"(\{[^}]*\})? (\S+)$", re.MULTILINE)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=10000,
                        help="flood datagrams a second (0: no flood)")
    parser.add_argument("--cps", type=float, default=4, help="carrier calls a second")
    parser.add_argument("--warmup", type=float, default=20,
                        help="seconds of calls before the baseline window (the calls ramp up)")
    parser.add_argument("--baseline", type=float, default=30, help="unflooded window, seconds")
    parser.add_argument("--flood", type=float, default=30, help="flood window, seconds")
    parser.add_argument("--after", type=float, default=60,
                        help="seconds of calls after the flood; RSS is read at its end")
    parser.add_argument("--untrusted", choices=("403", "drop"), default=None,
                        help="the server's sip.untrusted (default: the server's default)")
    parser.add_argument("--source", default="127.0.0.66", help="the flood's source address")
    parser.add_argument("--no-priority-socket", dest="priority_socket", action="store_false",
                        help="sip.priority_socket = false: one UDP socket for everyone")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the server, SIPp and the generator to cores")
    parser.add_argument("--quiet", type=float, default=0.3, metavar="CORES",
                        help="before the run wait (up to 3 min) until the machine's busy CPU "
                             "is at most this many cores")
    add_package_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    return parser.parse_args()


def scrape(port: int) -> dict[str, float]:
    """The refusal counters of /metrics as {"name{labels}": value}."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError as error:
        log(f"scrape failed: {error}")
        return {}
    return {name + (labels or ""): float(value)
            for name, labels, value in _COUNTERS.findall(text)}


def call_windows(rtt: dict[str, list[tuple[float, float]]], sipp_started: float,
                 windows: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Setup times of the calls that started in each window (monotonic bounds)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (start, end) in windows.items():
        row: dict[str, Any] = {}
        for rtd in ("answer", "ringing"):
            values = [value for at, value in rtt.get(rtd, [])
                      if start <= sipp_started + (at - value) / 1000 < end]
            row[f"{rtd}_n"] = len(values)
            row[f"{rtd}_ms_mean"] = statistics.fmean(values) if values else None
            for q in (50, 95, 99):
                row[f"{rtd}_ms_p{q}"] = percentile(values, q)
            row[f"{rtd}_ms_max"] = max(values) if values else None
        out[name] = row
    return out


def mean_rss(sampler: Sampler, start: float, end: float) -> float | None:
    values = [s.procs["server"]["rss_kib"] / 1024 for s in sampler.between(start, end)
              if "server" in s.procs]
    return statistics.fmean(values) if values else None


def run(args: argparse.Namespace, sipp: str, base: Path, snapshot: Path | None
        ) -> dict[str, Any]:
    server_cpus, sipp_cpus = default_pinning(args.pin)
    plan = PortPlan(rtp_base=1100)
    ports = plan.fixed(12)  # +0 server SIP, +1 callee SIP, +2 caller SIP, +4/+8 media
    metrics_port = plan.fixed(1)
    call_seconds = ANNOUNCEMENT_SECONDS + PCAP_SECONDS + HOLD_MS / 1000 + 0.5
    extra = f'untrusted = "{args.untrusted}"\n' if args.untrusted else ""
    if not args.priority_socket:
        extra += "priority_socket = false\n"
    spec = ServerSpec(name="flood", sip_port=ports, rtp_range=plan.rtp_range(400),
                      storage=base / "var", target_port=ports + 1, record=True,
                      metrics_port=metrics_port, trusted_sources=("127.0.0.1/32",),
                      sip_extra=extra)
    media.prepare_pcap_dir(base, 20)
    busy = wait_for_quiet(args.quiet, 180)
    server = Server(spec, base, snapshot=snapshot, cpus=server_cpus, log_level="info")
    server.start()
    sampler = Sampler(1.0)
    sampler.add("server", server.pid, server=True)
    total = args.warmup + args.baseline + args.flood + args.after
    calls = int(args.cps * total)
    callee = start_sipp(sipp, "callee", callee_args(ports + 1, ports + 4, calls + 20), base,
                        cpus=sipp_cpus, stat=False, timeout=total + 180)
    sampler.add("callee", callee.pid)
    sampler.start()
    row: dict[str, Any] = {"flood_rate": args.rate, "cps": args.cps, "calls": calls,
                           "untrusted": args.untrusted or "(default)",
                           "priority_socket": args.priority_socket,
                           "busy_before_run_cores": busy}
    try:
        time.sleep(1.0)
        caller = start_sipp(sipp, "caller", caller_args(
            ports, ports + 2, ports + 8, scenario="load_caller_pcap.xml", rate=args.cps,
            calls=calls, limit=calls, hold_ms=HOLD_MS, extra=["-set", "plays", "1"]),
            base, cpus=sipp_cpus, rtt=True, timeout=total + call_seconds + 120)
        sampler.add("caller", caller.pid)
        baseline_start = caller.started + args.warmup
        flood_start = baseline_start + args.baseline
        time.sleep(max(0.0, flood_start - time.monotonic()))
        drops_before = udp_port_drops(spec.sip_port)
        log_before = len(server.log_text().encode())
        lines_before = server.log_text().count("\n")
        flood: dict[str, Any] = {}
        flood_end = flood_start + args.flood
        if args.rate > 0:
            generator = subprocess.Popen(
                [*(["taskset", "-c", sipp_cpus] if sipp_cpus else []), PYTHON, "-m",
                 "benchmarks.load.floodgen", "--target", f"127.0.0.1:{spec.sip_port}",
                 "--source", args.source, "--rate", str(args.rate), "--seconds",
                 str(args.flood), "--linger", "1"],
                stdout=subprocess.PIPE, text=True, env=snapshot_env(None))
            sampler.add("generator", generator.pid)
            time.sleep(args.flood / 2)
            row["metrics_mid_flood"] = scrape(metrics_port)
            out, _ = generator.communicate(timeout=args.flood + 60)
            flood = json.loads(out.strip().splitlines()[-1])
            flood_start, flood_end = flood["started"], flood["ended"]
            sampler.remove("generator")
        else:
            time.sleep(args.flood)
        time.sleep(2.0)  # the log lines of the flood's end reach the file
        row["flood"] = flood
        row["sip_socket_drops_during_flood"] = udp_port_drops(spec.sip_port) - drops_before
        text = server.log_text()
        row["log_bytes_during_flood"] = len(text.encode()) - log_before
        row["log_lines_during_flood"] = text.count("\n") - lines_before
        rss_at = flood_end + args.after
        time.sleep(max(0.0, rss_at + 1.5 - time.monotonic()))
        row["metrics_after"] = scrape(metrics_port)
        caller.wait(total + call_seconds + 150)
        sampler.remove("caller")
        stats = caller.stats()
        row.update({"created": stats["created"], "successful": stats["successful"],
                    "failed": stats["failed"], "failures": stats.get("failures", {}),
                    "retransmissions": stats.get("retransmissions")})
        windows = {"baseline": (baseline_start, flood_start), "flood": (flood_start, flood_end),
                   "after": (flood_end, flood_end + args.after)}
        row["windows"] = call_windows(read_rtt(caller.rtt_file()), caller.started, windows)
        for name, (start, end) in windows.items():
            cpu = sampler.cpu_share("server", start, end)
            main = sampler.cpu_share("server", start, end, key="cpu_main")
            busy_share = sampler.machine_share(start, end)
            row["windows"][name].update({
                "server_cpu_pct": None if cpu is None else 100 * cpu,
                "server_main_cpu_pct": None if main is None else 100 * main,
                "machine_busy_cores": busy_share,
                "rss_mib_mean": mean_rss(sampler, start, end),
                "rss_mib_peak": (sampler.peak("server", "rss_kib", start, end) or 0) / 1024})
        row["rss_baseline_mib"] = mean_rss(sampler, flood_start - 10, flood_start)
        row["rss_minute_after_mib"] = mean_rss(sampler, rss_at - 1.5, rss_at + 1.5)
        row["log"] = server.log_summary()
        final = server.log_text()
        row["summary_lines"] = len(re.findall(r"refused [\d,]+ messages from", final))
        # Lines about the flood itself (the rest of the flood window's lines are the calls').
        row["log_lines_naming_the_flood_source"] = sum(
            args.source in line for line in final.splitlines())
        judge(row, args)
    finally:
        callee.stop()
        row["server_exit"] = server.stop()
        sampler.stop()
        row["series"] = sampler.series(sampler.samples[0].t if sampler.samples else 0.0)
    return row


def judge(row: dict[str, Any], args: argparse.Namespace) -> None:
    """Issue 14's target, each part on its own."""
    base, flooded = row["windows"]["baseline"], row["windows"]["flood"]
    checks: dict[str, bool | None] = {}
    checks["all_calls_succeeded"] = (row["failed"] == 0 and row["successful"] == row["calls"])
    for key in ("answer_ms_mean", "answer_ms_p95"):
        if base[key] is None or flooded[key] is None:
            checks[f"setup_{key}_within_{SETUP_MARGIN_MS:.0f}ms"] = None
        else:
            checks[f"setup_{key}_within_{SETUP_MARGIN_MS:.0f}ms"] = \
                flooded[key] - base[key] <= SETUP_MARGIN_MS
    before, after = row["rss_baseline_mib"], row["rss_minute_after_mib"]
    checks["rss_back_within_10pct"] = (None if before is None or after is None
                                       else after <= before * (1 + RSS_MARGIN))
    row["checks"] = checks
    row["passed"] = all(value is True for value in checks.values())


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_row(row: dict[str, Any]) -> None:
    flood = row.get("flood") or {}
    print(f"\nflood: {_fmt(flood.get('rate'))} msg/s asked {_fmt(row['flood_rate'])}, "
          f"{_fmt(flood.get('sent'))} sent in {_fmt(flood.get('seconds'), 1)} s "
          f"({flood.get('sender', '-')}, generator {_fmt(flood.get('cpu_seconds'), 1)} CPU s); "
          f"answers {flood.get('statuses', {})}; SIP socket drops "
          f"{row['sip_socket_drops_during_flood']:,}; log +{row['log_bytes_during_flood']:,} "
          f"bytes / {row['log_lines_during_flood']:,} lines during the flood (calls' lines "
          f"included; {row.get('log_lines_naming_the_flood_source', '-')} name the flood's "
          f"source)\n")
    print("| window | calls started | setup ms mean / p50 / p95 / max (INVITE to 200) | "
          "INVITE to 183 ms p50 / p95 | server CPU % (main) | RSS MiB mean / peak | "
          "machine busy cores |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("baseline", "flood", "after"):
        w = row["windows"][name]
        print(f"| {name} | {w['answer_n']} | {_fmt(w['answer_ms_mean'])} / "
              f"{_fmt(w['answer_ms_p50'])} / {_fmt(w['answer_ms_p95'])} / "
              f"{_fmt(w['answer_ms_max'])} | {_fmt(w['ringing_ms_p50'], 1)} / "
              f"{_fmt(w['ringing_ms_p95'], 1)} | {_fmt(w['server_cpu_pct'])} "
              f"({_fmt(w['server_main_cpu_pct'])}) | {_fmt(w['rss_mib_mean'], 1)} / "
              f"{_fmt(w['rss_mib_peak'], 1)} | {_fmt(w['machine_busy_cores'], 2)} |")
    print(f"\ncarrier calls: {row['successful']:,} of {row['calls']:,} successful, "
          f"{row['failed']:,} failed {row['failures'] or ''}; RSS baseline "
          f"{_fmt(row['rss_baseline_mib'], 1)} MiB, a minute after the flood "
          f"{_fmt(row['rss_minute_after_mib'], 1)} MiB; checks {row['checks']}; "
          f"{'PASS' if row['passed'] else 'FAIL'}", flush=True)


def main() -> int:
    args = parse_args()
    sipp = require_sipp()
    payload = result_header(KIND, args)
    with workdir(KIND, args.keep) as base:
        snapshot = prepare_package(args, base, payload)
        row = run(args, sipp, base, snapshot)
        payload["rows"] = [row]
        print_row(row)
        write_result(KIND, payload)
    return 0 if row["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
