"""Messages per second through the SIP transport: SIPp OPTIONS at a running server.

Starts ``mediacore serve`` on free loopback ports and drives it with SIPp's
OPTIONS scenario (sipp-scenarios/options.xml) at rising rates,
each step bounded in calls and time. A step passes when every OPTIONS got
its 200. Reports, per step, the rate SIPp achieved, failures, and the
server's CPU seconds per 1,000 requests (from /proc, user + system).

    .venv/bin/python benchmarks/sip_options_load.py --rates 1000 2000 4000 --seconds 5

Every OPTIONS is one request in and one response out, a full server
transaction each (created, answered, kept for Timer J, reaped).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import MediacoreServer, basic_config, free_sip_port  # noqa: E402
from tests.support.sipp import find_sipp  # noqa: E402

SCENARIO = REPO / "sipp-scenarios" / "options.xml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_step(sipp: str, port: int, rate: int, seconds: int, workdir: Path) -> dict[str, float]:
    calls = rate * seconds
    stat = workdir / f"stat-{rate}.csv"
    command = [
        sipp, "-sf", str(SCENARIO), "-s", "ping", "-i", "127.0.0.1",
        "-p", str(free_sip_port()), "-r", str(rate), "-rp", "1000", "-m", str(calls),
        "-l", str(max(rate, 100)), "-nostdin", "-timeout", f"{seconds * 3 + 10}s",
        "-trace_stat", "-stf", str(stat), "-fd", "1", f"127.0.0.1:{port}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 3 + 30,
                            check=False, cwd=workdir)
    text = result.stdout + result.stderr
    def count(label: str) -> int:
        match = re.search(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return int(match.group(1)) if match else -1
    return {"successful": count("Successful call"), "failed": count("Failed call"),
            "returncode": result.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    sipp = find_sipp()
    if sipp is None:
        raise SystemExit("sipp is not installed (apt-get install sip-tester)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_sip_port()
        server = MediacoreServer(workdir, basic_config(port, workdir / "var"), port)
        server.start()
        assert server.process is not None
        try:
            print("| offered rate (/s) | OPTIONS | answered 200 | failed | server CPU s "
                  "| CPU ms per 1,000 |")
            print("|---:|---:|---:|---:|---:|---:|")
            for rate in args.rates:
                before = cpu_seconds(server.process.pid)
                step = run_step(sipp, port, rate, args.seconds, workdir)
                used = cpu_seconds(server.process.pid) - before
                total = rate * args.seconds
                per_thousand = 1000 * used / max(step["successful"], 1) * 1000
                print(f"| {rate} | {total} | {step['successful']} | {step['failed']} "
                      f"| {used:.2f} | {per_thousand:.0f} |", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
