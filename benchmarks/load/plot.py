"""Plots of the load results: CPU, failures and loss against load, memory over time.

Reads the newest result file of each kind in benchmarks/results/ (or the
files given) and writes, to benchmarks/plots/, one CSV per figure always
and one PNG per figure when matplotlib is installed (it is not a
dependency of the project: ``.venv/bin/pip install matplotlib``). Without
it the script says so and still writes the CSVs.

    .venv/bin/python -m benchmarks.load.plot
    .venv/bin/python -m benchmarks.load.plot benchmarks/results/cps-20261123T170000Z.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.load.common import PLOTS_DIR, RESULTS_DIR

KINDS = ("cps", "cps-x2", "concurrent_calls", "concurrent_calls-idle", "soak")


def newest(kind: str) -> Path | None:
    """The newest result file of ``kind`` (names end in a sortable UTC time)."""
    found = sorted(p for p in RESULTS_DIR.glob(f"{kind}-*.json")
                   if p.name[len(kind) + 1].isdigit())
    return found[-1] if found else None


def load(paths: Sequence[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    if paths:
        for path in paths:
            data = json.loads(path.read_text())
            kind = path.name.rsplit("-", 1)[0]
            out[kind] = (path, data)
        return out
    for kind in KINDS:
        path = newest(kind)
        if path is not None:
            out[kind] = (path, json.loads(path.read_text()))
    return out


def write_csv(name: str, header: list[str], rows: list[list[Any]]) -> Path:
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    path = PLOTS_DIR / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cps_tables(data: dict[str, Any], name: str) -> list[Path]:
    rows = []
    for mode, ramp in data.get("ramps", {}).items():
        for r in ramp:
            rows.append([mode, r["offered_cps"], r.get("achieved_cps"), r["failed"],
                         r["successful"], r.get("server_cpu_pct"), r.get("cpu_ms_per_call"),
                         r.get("answer_ms_p99"), r.get("errors_logged"), r["passed"]])
    return [write_csv(name, ["mode", "offered_cps", "achieved_cps", "failed", "successful",
                             "server_cpu_pct", "cpu_ms_per_call", "answer_ms_p99",
                             "errors_logged", "passed"], rows)]


def concurrent_tables(data: dict[str, Any], name: str) -> list[Path]:
    rows = []
    for r in data.get("rows", []):
        recs = r.get("recordings") or {}
        probe = r.get("probe") or {}
        relay = r.get("relay") or {}
        rows.append([r["calls"], r.get("failed"), r.get("server_cpu_pct"),
                     r.get("server_main_cpu_pct"), r.get("sipp_caller_cpu_pct"),
                     r.get("sipp_callee_cpu_pct"), relay.get("caller_loss"),
                     relay.get("target_loss"), relay.get("recording_dropped"),
                     recs.get("caller_loss"), recs.get("callee_loss"),
                     probe.get("rtt_ms_p99"), r.get("rss_kib_per_call"), r.get("passed")])
    return [write_csv(name, ["calls", "failed", "server_cpu_pct", "server_main_cpu_pct",
                             "sipp_caller_cpu_pct", "sipp_callee_cpu_pct", "rtp_loss_caller",
                             "rtp_loss_target", "recording_tap_drops",
                             "recording_deficit_caller", "recording_deficit_callee",
                             "probe_rtt_ms_p99", "rss_kib_per_call", "passed"],
                      rows)]


def soak_table(data: dict[str, Any]) -> list[Path]:
    series = data.get("result", {}).get("series", [])
    rows = [[s["t"], s["procs"].get("server", {}).get("rss_kib"),
             s["procs"].get("server", {}).get("fds"),
             s["procs"].get("server", {}).get("cpu")] for s in series]
    return [write_csv("soak", ["t_s", "rss_kib", "fds", "cpu_s"], rows)]


def plot_all(results: dict[str, tuple[Path, dict[str, Any]]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)

    for kind in ("cps", "cps-x2"):
        if kind not in results:
            continue
        path, data = results[kind]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        for mode, ramp in data.get("ramps", {}).items():
            x = [r["offered_cps"] for r in ramp]
            top.plot(x, [r.get("server_cpu_pct") or 0 for r in ramp], "o-",
                     label=f"{mode}: server CPU %")
            top.plot(x, [r.get("achieved_cps") or 0 for r in ramp], "x--",
                     label=f"{mode}: achieved cps")
            bottom.plot(x, [r["failed"] for r in ramp], "o-", label=f"{mode}: failed calls")
            bottom.plot(x, [r.get("errors_logged") or 0 for r in ramp], "x:",
                        label=f"{mode}: errors logged")
        top.axhline(100, color="grey", lw=0.8, ls=":")
        top.set_ylabel("% of one core / calls per s")
        top.legend(fontsize=8)
        top.set_title(f"Call rate ramp ({path.name})", fontsize=9)
        bottom.set_xlabel("offered calls per second" + (" (both servers)" if "x2" in kind
                                                         else ""))
        bottom.set_ylabel("count per step")
        bottom.set_yscale("symlog")
        bottom.legend(fontsize=8)
        out = PLOTS_DIR / f"{kind}.png"
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)

    if "concurrent_calls" in results:
        path, data = results["concurrent_calls"]
        rows = data.get("rows", [])
        x = [r["calls"] for r in rows]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        top.plot(x, [r.get("server_cpu_pct") for r in rows], "o-", label="server CPU %")
        top.plot(x, [r.get("server_main_cpu_pct") for r in rows], "o:",
                 label="server main thread %")
        top.plot(x, [(r.get("sipp_caller_cpu_pct") or 0) + (r.get("sipp_callee_cpu_pct") or 0)
                     for r in rows], "s--", label="SIPp caller+callee CPU %")
        top.axhline(90, color="grey", lw=0.8, ls=":")
        top.set_ylabel("% of one core")
        top.legend(fontsize=8)
        top.set_title(f"Concurrent recorded calls ({path.name})", fontsize=9)
        for key, style, label in (("caller_loss", "o-", "RTP loss from callers %"),
                                  ("target_loss", "s-", "RTP loss from targets %")):
            bottom.plot(x, [100 * ((r.get("relay") or {}).get(key) or 0) for r in rows],
                        style, label=label)
        for key, style, label in (("caller_loss", "o--", "recording deficit caller ch. %"),
                                  ("callee_loss", "s--", "recording deficit callee ch. %")):
            bottom.plot(x, [100 * ((r.get("recordings") or {}).get(key) or 0) for r in rows],
                        style, alpha=0.6, label=label)
        bottom.axhline(0.1, color="red", lw=0.8, ls=":", label="target 0.1 %")
        rtt = [(r.get("probe") or {}).get("rtt_ms_p99") for r in rows]
        if any(v is not None for v in rtt):
            right = bottom.twinx()
            right.plot(x, [v or 0 for v in rtt], "^:", color="black", label="probe RTT p99 ms")
            right.set_ylabel("ms")
            right.legend(fontsize=8, loc="upper right")
        bottom.set_xlabel("concurrent calls")
        bottom.set_ylabel("%")
        bottom.legend(fontsize=8, loc="upper left")
        out = PLOTS_DIR / "concurrent_calls.png"
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)

    if "soak" in results:
        path, data = results["soak"]
        result = data.get("result", {})
        series = result.get("series", [])
        t = [s["t"] / 60 for s in series if "server" in s["procs"]]
        rss = [s["procs"]["server"]["rss_kib"] / 1024 for s in series if "server" in s["procs"]]
        fds = [s["procs"]["server"].get("fds") for s in series if "server" in s["procs"]]
        fig, left = plt.subplots(figsize=(8, 4))
        left.plot(t, rss, "-", label="RSS MiB")
        left.set_xlabel("minutes")
        left.set_ylabel("RSS MiB")
        right = left.twinx()
        right.plot(t, fds, "-", color="tab:orange", label="open fds")
        right.set_ylabel("fds")
        marks = result.get("marks", {})
        for key in ("load_start", "load_end"):
            if key in marks:
                left.axvline(marks[key] / 60, color="grey", ls=":", lw=0.8)
        left.set_title(f"Soak ({path.name})", fontsize=9)
        fig.legend(fontsize=8, loc="upper left")
        out = PLOTS_DIR / "soak.png"
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args()
    results = load(args.files)
    if not results:
        print(f"no results in {RESULTS_DIR}; run the load scripts first", file=sys.stderr)
        return 1
    written: list[Path] = []
    for kind, (_, data) in results.items():
        if kind.startswith("cps"):
            written += cps_tables(data, kind)
        elif kind.startswith("concurrent"):
            written += concurrent_tables(data, kind)
        elif kind == "soak":
            written += soak_table(data)
    try:
        written += plot_all(results)
    except ImportError:
        print("matplotlib is not installed, so no PNGs were drawn: "
              ".venv/bin/pip install matplotlib (the CSVs below were written)",
              file=sys.stderr)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
