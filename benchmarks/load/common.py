"""What every load script needs: the server, SIPp, Redis, /proc sampling, results.

Why not tests/support: the load scripts need things the tests do not (a
snapshot of the package so that a rebuild in the shared tree cannot change
the code under a running measurement, CPU pinning, per-second /proc
samples, SIPp's statistics files, CPU time of exited children), and they
must not break when the tests' helpers change.

Everything runs on 127.0.0.1, every process is bounded in time and calls,
and every process started here is stopped here (by its pid, never by name).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "sipp-scenarios"
RESULTS_DIR = REPO / "benchmarks" / "results"
PLOTS_DIR = REPO / "benchmarks" / "plots"
SIPP_SAMPLES = Path("/usr/share/sip-tester")
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
SERVICE_NUMBER = "+31900123456"
#: mediacore/rtp/ports.py DEFAULT_QUARANTINE. Older versions refused a released pair
#: for this long; now pairs are reused least recently released
#: first and only counted when reused sooner (``--package`` runs of older
#: checkouts still need ranges sized for it: see pairs_for).
PORT_QUARANTINE = 30.0
#: The recording notice a recorded number plays before dialling (2.43 s).
ANNOUNCEMENT_SECONDS = 2.43
#: SIPp's g711a.pcap: 236 PCMA packets of 30 ms.
PCAP_SECONDS = 7.08


def log(text: str) -> None:
    """Progress on stderr, so that stdout stays for the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- machine, versions, results ---------------------------------------------------


def _run_text(command: Sequence[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20,
                             check=False, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable: {error}"
    return (out.stdout + out.stderr).strip()


def machine() -> dict[str, Any]:
    """The host as the results files name it: lscpu model name, cores, kernel, memory."""
    model = next((line.split(":", 1)[1].strip() for line in _run_text(["lscpu"]).splitlines()
                  if line.startswith("Model name")), platform.processor())
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                    .splitlines() if line.startswith("MemTotal")), 0)
    return {"model": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "memory_gib": round(mem_kib / 1048576, 1), "loadavg_at_start": os.getloadavg()}


def versions() -> dict[str, Any]:
    """Python, uvloop, SIPp and redis-server versions, and which mediacore tree ran."""
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"
    sipp = find_sipp()
    sipp_line = ""
    if sipp:
        sipp_line = next((line.strip() for line in _run_text([sipp, "-v"]).splitlines()
                          if "SIPp" in line), "")
    redis = shutil.which("redis-server")
    # Names only: porcelain's status columns start with a space that strip() eats.
    dirty = _run_text(["git", "status", "--porcelain", "--no-renames", "--", "mediacore"],
                      cwd=REPO)
    return {
        "python": platform.python_version(),
        "uvloop": dist("uvloop"),
        "mediacore": dist("mediacore"),
        "sipp": sipp_line,
        "redis_server": _run_text([redis, "--version"]).split(" sha=")[0] if redis else "",
        "git_commit": _run_text(["git", "rev-parse", "--short", "HEAD"], cwd=REPO),
        "mediacore_uncommitted": [line.split(maxsplit=1)[-1] for line in dirty.splitlines()],
    }


def write_result(kind: str, payload: dict[str, Any]) -> Path:
    """benchmarks/results/<kind>-<UTC time>.json: what plot.py and the report read."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    log(f"results: {path.relative_to(REPO)}")
    return path


def result_header(kind: str, args: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python -m", f"benchmarks.load.{kind}",
                             *sys.argv[1:]]),
        "arguments": vars(args),
        "machine": machine(),
        "versions": versions(),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return None
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


# --- ports -------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int, kinds: Iterable[int]) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block(count: int, start: int = 61000, stop: int = 65500,
                    kinds: Iterable[int] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    """First port p in [start, stop) with p..p+count-1 all free (SIPp's SIP and media ports).

    Above the kernel's ephemeral range (32768-60999) and above our RTP ranges,
    so nothing hands these out while we run.
    """
    kinds = tuple(kinds)
    port = start
    while port + count < stop:
        if all(_bindable(p, kinds) for p in range(port, port + count)):
            return port
        port += count
    raise RuntimeError(f"no {count} consecutive free ports in {start}-{stop}")


class PortPlan:
    """Hands out SIP/media ports for SIPp and the servers, and RTP ranges, without overlap."""

    def __init__(self, rtp_base: int = 10000, rtp_limit: int = 60999) -> None:
        self._next_rtp = rtp_base
        self._rtp_limit = rtp_limit
        self._next_fixed = 61000

    def fixed(self, count: int = 4) -> int:
        port = free_port_block(count, start=self._next_fixed)
        self._next_fixed = port + count
        return port

    def rtp_range(self, pairs: int) -> tuple[int, int]:
        """An even-aligned range holding ``pairs`` RTP/RTCP pairs (capped at the limit).

        Ports inside it that another process holds are skipped by the pool
        (mediacore/rtp/ports.py), at the cost of a failed bind each.
        """
        first = self._next_rtp + (self._next_rtp & 1)
        last = min(first + 2 * pairs + 1, self._rtp_limit)
        if last - first + 1 < 2 * pairs:
            log(f"warning: RTP range {first}-{last} holds {(last - first + 1) // 2} pairs, "
                f"{pairs} wanted: the load may run out of ports (503)")
        self._next_rtp = last + 1
        return first, last


def pairs_for(rate: float, call_seconds: float, load_seconds: float) -> int:
    """RTP pairs a run needs: 2 per call, held for the call (and its quarantine).

    Over ``load_seconds`` at ``rate`` calls/s, a pool that quarantines
    released pairs (an older checkout, which ``--package`` may run) holds
    every pair released within the last PORT_QUARANTINE seconds too, so the
    range is sized for rate x 2 x min(load, call + quarantine) pairs, plus
    headroom: generous for the current pool, which needs only rate x 2 x
    call, and the same for both versions, so that runs compare.
    """
    busy = min(load_seconds + call_seconds, call_seconds + PORT_QUARANTINE)
    wanted = int(rate * 2 * busy * 1.1) + 200
    # The server refuses a range whose sockets would not fit the open-file
    # limit (mediacore/host_checks.py: 2.5 descriptors per pair + 256); the
    # current pool needs only rate x 2 x call pairs, far below the cap.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        fitting = int((hard - 256) / 2.5) - 1
        if wanted > fitting:
            log(f"RTP range capped at {fitting} pairs (open-file limit {hard}); "
                f"a quarantining older version would want {wanted}")
            wanted = fitting
    return wanted


# --- /proc ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu(pid: int) -> dict[int, float]:
    """{tid: user + system seconds} for every thread of a live process."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def status_fields(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    parts = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp): drops anywhere on the host show here."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return {name: int(value) for name, value in zip(lines[0][1:], lines[1][1:], strict=True)}


def udp_port_drops(port: int) -> int:
    """Datagrams dropped at the receive queue of the UDP socket bound to 127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[1] == local:
                return int(parts[12])
    return 0


def socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out.add(int(target[8:-1]))
    return out


def udp_drops_by_inode() -> dict[int, int]:
    """{socket inode: datagrams dropped at its receive queue} for every UDP socket."""
    out: dict[int, int] = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                parts = line.split()
                out[int(parts[9])] = int(parts[12])
    return out


@dataclass
class Sample:
    t: float  # time.monotonic()
    procs: dict[str, dict[str, float]]
    sys_busy: float
    sys_total: float


class Sampler:
    """Samples the registered processes every ``interval`` seconds in a thread.

    Per process: CPU (user + system; for the server also the main thread's
    share), RSS, and for the server the open fds. Machine-wide busy CPU is
    sampled too, so a run can say how much CPU others used beside it.
    With ``watch_drops`` it also keeps, per process, the highest drop count
    seen on each of its UDP sockets (sockets of ended calls keep their last
    count), which tells whose receive queues overflowed.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[Sample] = []
        self._procs: dict[str, tuple[int, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.watch_drops = False
        self._drops: dict[str, dict[int, int]] = {}

    def add(self, label: str, pid: int, *, server: bool = False) -> None:
        with self._lock:
            self._procs[label] = (pid, server)

    def remove(self, label: str) -> None:
        with self._lock:
            self._procs.pop(label, None)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample_now(self) -> Sample:
        with self._lock:
            procs = dict(self._procs)
        values: dict[str, dict[str, float]] = {}
        for label, (pid, server) in procs.items():
            try:
                row: dict[str, float] = {"cpu": cpu_seconds(pid)}
                status = status_fields(pid)
                row["rss_kib"] = status.get("VmRSS", 0)
                row["threads"] = status.get("Threads", 0)
                if server:
                    threads = thread_cpu(pid)
                    row["cpu_main"] = threads.get(pid, 0.0)
                    row["fds"] = fd_count(pid)
                values[label] = row
            except (OSError, ValueError, IndexError):
                continue
        if self.watch_drops:
            self._update_drops(procs)
        busy, total = system_cpu()
        sample = Sample(time.monotonic(), values, busy, total)
        self.samples.append(sample)
        return sample

    def _update_drops(self, procs: dict[str, tuple[int, bool]]) -> None:
        drops = udp_drops_by_inode()
        for label, (pid, _) in procs.items():
            seen = self._drops.setdefault(label, {})
            for inode in socket_inodes(pid):
                if inode in drops:
                    seen[inode] = max(seen.get(inode, 0), drops[inode])

    def drops(self) -> dict[str, int]:
        return {label: sum(seen.values()) for label, seen in self._drops.items()}

    def reset_drops(self) -> None:
        self._drops = {}

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample_now()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]

    def cpu_share(self, label: str, start: float, end: float, key: str = "cpu"
                  ) -> float | None:
        """CPU of ``label`` over [start, end] as a fraction of one core (1.0 = 100%)."""
        inside = [s for s in self.between(start, end) if label in s.procs]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        if last.t <= first.t:
            return None
        return (last.procs[label][key] - first.procs[label][key]) / (last.t - first.t)

    def machine_share(self, start: float, end: float) -> float | None:
        """Busy CPU of the whole machine over [start, end], in cores."""
        inside = self.between(start, end)
        if len(inside) < 2 or inside[-1].t <= inside[0].t:
            return None
        return (inside[-1].sys_busy - inside[0].sys_busy) / (inside[-1].t - inside[0].t)

    def peak(self, label: str, key: str, start: float, end: float) -> float | None:
        values = [s.procs[label][key] for s in self.between(start, end)
                  if label in s.procs and key in s.procs[label]]
        return max(values) if values else None

    def series(self, t0: float) -> list[dict[str, Any]]:
        """The samples as JSON rows, time relative to ``t0``."""
        return [{"t": round(s.t - t0, 2), "procs": s.procs,
                 "sys_busy": round(s.sys_busy, 2)} for s in self.samples]


# --- the package snapshot and the server -------------------------------------------


def snapshot_package(dest: Path, source: Path = REPO) -> str:
    """Copy ``source``'s mediacore/ (sources and built extensions) to ``dest``; return its digest.

    The server runs from this copy (PYTHONPATH; the shipped prompts are
    package data, mediacore/data/announcements/), so another engineer
    rebuilding or editing the shared tree mid-run cannot change, or crash by
    overwriting a loaded .so, the code under measurement. The digest of the
    .py/.pyx/.so files says which code a result belongs to. ``source`` is
    another checkout (``--package``) to measure a previous version with the
    same harness on the same machine.
    """
    target = dest / "mediacore"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source / "mediacore", target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    # Checkouts before the prompts became package data kept them in a top-level
    # announcements/ beside the package, where those versions look for them.
    if any((source / "announcements").glob("*.wav")):
        shutil.copytree(source / "announcements", dest / "announcements", dirs_exist_ok=True)
    digest = hashlib.sha256()
    for path in sorted(dest.rglob("*")):
        if path.suffix in (".py", ".pyx", ".so", ".wav") and path.is_file():
            digest.update(path.relative_to(dest).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def add_package_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-snapshot`` and ``--package``: which mediacore the server runs."""
    parser.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                        help="run the working tree's package instead of a copy")
    parser.add_argument("--package", type=Path, metavar="CHECKOUT",
                        help="run the mediacore of another checkout (its extensions built "
                             "in place, e.g. a git worktree of an older commit) to compare "
                             "versions on one machine with one harness")


def prepare_package(args: argparse.Namespace, base: Path, payload: dict[str, Any]
                    ) -> Path | None:
    """The snapshot the server runs from (None: the working tree), noted in ``payload``."""
    source = args.package.resolve() if args.package else None
    if source is not None:
        if not any((source / "mediacore").glob("_codecs*.so")):
            raise SystemExit(f"{source}: no built mediacore there (run "
                             "'python setup.py build_ext --inplace' in it)")
        payload["versions"]["git_commit"] = _run_text(
            ["git", "rev-parse", "--short", "HEAD"], cwd=source)
        payload["versions"]["package"] = str(source)
    elif not args.snapshot:
        return None
    snapshot = base / "snapshot"
    payload["versions"]["snapshot_digest"] = snapshot_package(snapshot, source or REPO)
    return snapshot


def snapshot_env(snapshot: Path | None, *, heapwatch: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [str(snapshot)] if snapshot is not None else []
    if heapwatch is not None:  # benchmarks.load.heapwatch, after the snapshot's mediacore
        paths.append(str(REPO))
        env["MEDIACORE_HEAPWATCH"] = str(heapwatch)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@dataclass
class ServerSpec:
    """One mediacore process's config, written as TOML."""

    name: str
    sip_port: int
    rtp_range: tuple[int, int]
    storage: Path
    target_port: int
    record: bool
    inactivity_timeout: float = 30.0
    max_duration: float = 7200.0
    redis_url: str | None = None
    node: str = "load"
    drain_timeout: float = 2.0
    #: More (number, target port) pairs, for several SIPp caller/callee pairs
    #: on one server: number i+1 is SERVICE_NUMBER + i + 1.
    extra_targets: tuple[int, ...] = ()
    #: A port for ``[metrics] listen`` (/metrics, /healthz, /readyz); None: no [metrics].
    metrics_port: int | None = None
    #: ``sip.trusted_sources``; the flood run trusts 127.0.0.1/32 only, so that
    #: other 127.x addresses stand for the hosts outside.
    trusted_sources: tuple[str, ...] = ("127.0.0.0/8",)
    #: More ``[sip]`` lines as TOML (e.g. ``untrusted = "drop"``).
    sip_extra: str = ""

    def numbers(self) -> list[tuple[str, int]]:
        first = int(SERVICE_NUMBER[1:])
        return [(f"+{first + i}", port)
                for i, port in enumerate((self.target_port, *self.extra_targets))]

    def toml(self) -> str:
        redis = f'\n[redis]\nurl = "{self.redis_url}"\n' if self.redis_url else ""
        if self.metrics_port is not None:
            redis += f'\n[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
        return f"""# generated by benchmarks/load/common.py
[sip]
listen = ["udp:127.0.0.1:{self.sip_port}"]
advertised_address = "127.0.0.1"
trusted_sources = [{", ".join(f'"{t}"' for t in self.trusted_sources)}]
drain_timeout = {self.drain_timeout}
{self.sip_extra}

[rtp]
address = "127.0.0.1"
port_range = [{self.rtp_range[0]}, {self.rtp_range[1]}]
inactivity_timeout = {self.inactivity_timeout}

[storage]
dir = "{self.storage}"

[records]
node = "{self.node}"
{redis}
{self._numbers_toml()}"""


    def _numbers_toml(self) -> str:
        return "".join(f"""
[[number]]
number = "{number}"
owner = "loadtest"
targets = ["sip:+31201234567@127.0.0.1:{port}"]
ring_timeout = 20
record = {"true" if self.record else "false"}
max_duration = {self.max_duration}
""" for number, port in self.numbers())


class Server:
    """``mediacore serve -c FILE`` as an operator runs it, optionally pinned to CPUs."""

    def __init__(self, spec: ServerSpec, workdir: Path, *, snapshot: Path | None,
                 cpus: str | None = None, heapwatch: Path | None = None,
                 env: dict[str, str] | None = None, log_level: str = "info") -> None:
        self.spec = spec
        self.log_level = log_level  # "debug" adds each call's relay counters (media_totals)
        self.workdir = workdir
        self.snapshot = snapshot
        self.cpus = cpus
        self.heapwatch = heapwatch  # census files' prefix (benchmarks/load/heapwatch.py)
        self.env = env or {}
        self._censuses = 0
        self.config_path = workdir / f"{spec.name}.toml"
        self.log_path = workdir / f"{spec.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spec.storage.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.spec.toml())
        module = "benchmarks.load.heapwatch" if self.heapwatch else "mediacore"
        command = [PYTHON, "-m", module, "serve", "-c", str(self.config_path),
                   "--log-level", self.log_level]
        if self.cpus is not None:
            command = ["taskset", "-c", self.cpus, *command]
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(command, cwd=self.workdir,
                                            env=snapshot_env(self.snapshot,
                                                             heapwatch=self.heapwatch)
                                            | self.env,
                                            stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "ready:" not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mediacore did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def census(self, timeout: float = 60.0) -> dict[str, Any] | None:
        """Ask a heapwatch server for a heap census (SIGUSR2) and read it back."""
        if self.heapwatch is None or not self.alive():
            return None
        self._censuses += 1
        path = Path(f"{self.heapwatch}.{self._censuses}.json")
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return dict(json.loads(path.read_text()))
            time.sleep(0.2)
        return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (drains, finalises recordings and CDRs), SIGKILL if it hangs."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.spec.name}: no exit {timeout:.0f}s after SIGTERM; SIGKILL")
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def cdrs(self) -> list[dict[str, str]]:
        """Every CDR in the journal, as ``mediacore cdr list --format json -c FILE`` gives them."""
        out = subprocess.run(
            [PYTHON, "-m", "mediacore", "cdr", "list", "--format", "json",
             "-c", str(self.config_path)],
            cwd=self.workdir, env=snapshot_env(self.snapshot), capture_output=True, text=True,
            timeout=300, check=False)
        if out.returncode != 0:
            log(f"cdr list failed ({out.returncode}): {out.stderr[-500:]}")
            return []
        text = out.stdout.strip()
        return json.loads(text) if text else []

    def log_summary(self, offset: int = 0) -> dict[str, Any]:
        """Errors and warnings the server logged (from byte ``offset`` of its log)."""
        text = self.log_text()[offset:]
        lines = text.splitlines()
        errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
        warnings = [line for line in lines if " WARNING " in line]
        return {
            "lines": len(lines),
            "errors": len(errors),
            "warnings": len(warnings),
            "tracebacks": text.count("Traceback (most recent call last)"),
            "no_media_503": sum("no media for the call" in line for line in warnings),
            "first_errors": errors[:5],
            "first_warnings": warnings[:5],
        }


_MEDIA_LINE = re.compile(r"call (\S+): (media|recording) ((?:caller\.packets|records)=.*)$",
                         re.MULTILINE)


def media_totals(log_text: str, call_ids: set[str] | None = None) -> dict[str, float]:
    """The relay counters of the calls in a DEBUG log, summed (calls.engine_media).

    ``caller.*`` counts what arrived from the callers, ``target.*`` what came
    back from the targets, ``recorder.*`` what the recorders did with the
    audio (shifts, late packets: mediacore/rtp/recorder.py); ``calls`` how
    many calls logged relay counters. Only the calls in ``call_ids`` (our
    call ids, the CDRs' ``call_id``) when given.
    """
    totals: dict[str, float] = {"calls": 0}
    for call_id, kind, line in _MEDIA_LINE.findall(log_text):
        if call_ids is not None and call_id not in call_ids:
            continue
        prefix = "recorder." if kind == "recording" else ""
        totals["calls"] += kind == "media"
        for word in line.split():
            key, _, value = word.partition("=")
            number = float(value)
            totals[prefix + key] = totals.get(prefix + key, 0) + number
            if key.endswith("jitter_ms"):  # a sum of jitters means nothing; their worst does
                totals[f"{key}.max"] = max(totals.get(f"{key}.max", 0.0), number)
    return totals


def wait_for_cdrs(server: Server, expected: int, predicate: Any = None,
                  timeout: float = 30.0) -> list[dict[str, str]]:
    """CDRs matching ``predicate``, once there are ``expected`` of them (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        cdrs = [c for c in server.cdrs() if predicate is None or predicate(c)]
        if len(cdrs) >= expected or time.monotonic() > deadline:
            return cdrs
        time.sleep(1.0)


# --- Redis -------------------------------------------------------------------------


class Redis:
    """A private redis-server (no persistence) on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port(socket.SOCK_STREAM)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/system-deps)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir),
             "--logfile", str(self.workdir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._ping():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> str:
        cli = shutil.which("redis-cli")
        if cli is None:
            return ""
        return _run_text([cli, "-p", str(self.port), *words])

    def xlen(self, key: str) -> int:
        text = self.command("XLEN", key)
        return int(text) if text.isdigit() else -1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


# --- SIPp ----------------------------------------------------------------------------


def find_sipp() -> str | None:
    return shutil.which("sipp")


def require_sipp() -> str:
    sipp = find_sipp()
    if sipp is None:
        raise SystemExit("sipp is not installed (apt-get install sip-tester)")
    return sipp


@dataclass
class SippRun:
    """One SIPp process: started, waited for with its CPU time, its statistics read."""

    label: str
    command: list[str]
    workdir: Path
    stat_file: Path | None
    process: subprocess.Popen[bytes]
    started: float
    ended: float | None = None
    cpu: float | None = None  # user + system seconds, from wait4 at exit
    returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float) -> int:
        """Wait (polling wait4, to get the child's CPU time); SIGKILL at the timeout."""
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.process.returncode = self.returncode
                self.cpu = usage.ru_utime + usage.ru_stime
                self.ended = time.monotonic()
                break
            if time.monotonic() > deadline:
                log(f"{self.label}: still running at its timeout; SIGKILL")
                self.process.kill()
                deadline = time.monotonic() + 10
            time.sleep(0.05)
        return self.returncode

    def stop(self) -> None:
        """SIGUSR1 makes SIPp stop gracefully (it finishes writing its files)."""
        if self.returncode is None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGUSR1)
        with contextlib.suppress(Exception):
            self.wait(20)

    def output(self) -> str:
        path = self.workdir / f"{self.label}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def stats(self) -> dict[str, Any]:
        """The last row of the -trace_stat file (cumulative counters), parsed."""
        rows = read_stat_rows(self.stat_file) if self.stat_file else []
        if not rows:
            return {"successful": _screen_count(self.output(), "Successful call"),
                    "failed": _screen_count(self.output(), "Failed call"), "created": -1}
        last = rows[-1]
        failures = {key[6:-3]: int(value) for key, value in last.items()
                    if key.startswith("Failed") and key.endswith("(C)") and value.isdigit()
                    and int(value) and key != "FailedCall(C)"}
        return {
            "created": int(last["TotalCallCreated"]),
            "successful": int(last["SuccessfulCall(C)"]),
            "failed": int(last["FailedCall(C)"]),
            "failures": failures,
            "retransmissions": int(last["Retransmissions(C)"]),
            "dead_call_msgs": int(last["DeadCallMsgs(C)"]),
            "out_of_call_msgs": int(last["OutOfCallMsgs(C)"]),
            "peak_rows": len(rows),
        }

    def tail(self, lines: int = 15) -> list[str]:
        """The end of SIPp's output (its last screen, or why it stopped)."""
        return self.output().splitlines()[-lines:]

    def rtt_file(self) -> Path | None:
        found = sorted(self.workdir.glob(f"*_{self.pid}_rtt.csv"))
        return found[0] if found else None


def _screen_count(text: str, label: str) -> int:
    found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(found[-1]) if found else -1


def read_stat_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    return [r for r in rows if r.get("TotalCallCreated", "").isdigit()]


def stat_epoch(value: str) -> float:
    """SIPp writes times as 'date<TAB>time<TAB>epoch'; the epoch is what we use."""
    return float(value.split("\t")[-1])


def read_rtt(path: Path | None) -> dict[str, list[tuple[float, float]]]:
    """{rtd name: [(ms since SIPp start when measured, response time ms)]} from -trace_rtt."""
    out: dict[str, list[tuple[float, float]]] = {}
    if path is None or not path.exists():
        return out
    with path.open() as handle:
        next(handle, None)
        for line in handle:
            parts = line.strip().split(";")
            if len(parts) == 3:
                with contextlib.suppress(ValueError):
                    out.setdefault(parts[2], []).append((float(parts[0]), float(parts[1])))
    return out


def rtt_summary(rtt: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """Percentiles of each response time, and the rate at which calls really started.

    Each call's "ringing" timer starts when SIPp creates the call, so
    (measured at - response time) is the call's start: the spread of those
    gives the achieved call rate to the millisecond, which the 1 s rows of
    -trace_stat cannot.
    """
    out: dict[str, Any] = {}
    for name, values in rtt.items():
        times = [v for _, v in values]
        out[name] = {f"p{q}": percentile(times, q) for q in (50, 95, 99)}
        out[name]["max"] = max(times) if times else None
        out[name]["n"] = len(times)
    starts = sorted(at - value for at, value in rtt.get("ringing", []))
    if len(starts) > 1 and starts[-1] > starts[0]:
        out["achieved_cps"] = (len(starts) - 1) / ((starts[-1] - starts[0]) / 1000)
    return out


def start_sipp(sipp: str, label: str, args: list[str], workdir: Path, *,
               cpus: str | None = None, stat: bool = True, rtt: bool = False,
               timeout: float = 120.0) -> SippRun:
    """Start SIPp without its curses screen; bounded by ``-timeout`` (and by ``wait``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pcap = workdir / "pcap"
    if not pcap.exists():
        pcap.symlink_to(SIPP_SAMPLES)
    stat_file = workdir / f"{label}.stat.csv" if stat else None
    command = [sipp, *args, "-nostdin", "-timeout", f"{int(timeout)}s"]
    if stat_file is not None:
        command += ["-trace_stat", "-stf", str(stat_file), "-fd", "1"]
    if rtt:
        command += ["-trace_rtt", "-rtt_freq", "1"]
    # Unexpected messages and their calls, to say why a call failed.
    command += ["-trace_err", "-error_file", str(workdir / f"{label}.errors.log")]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    with (workdir / f"{label}.out").open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT)
    return SippRun(label, command, workdir, stat_file, process, time.monotonic())


def callee_args(port: int, media_port: int, calls: int) -> list[str]:
    """The target: load_callee.xml answering PCMA, echoing RTP to its sender.

    SIPp binds ``media_port`` and ``media_port + 2`` (video): keep 4 ports free.
    One socket and one thread echo every call's audio, so its receive buffer
    is raised to the most the kernel allows (net.core.rmem_max): with the
    default 208 KiB it overflows at a few hundred calls whenever the echo
    thread waits for the CPU, and that loss would be the generator's.
    """
    return ["-sf", str(SCENARIOS / "load_callee.xml"), "-i", "127.0.0.1", "-p", str(port),
            "-mp", str(media_port), "-rtp_echo", "-rtp_buffsize", str(rmem_max()),
            "-m", str(calls), "-l", "10000"]


def rmem_max() -> int:
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text())
    except (OSError, ValueError):
        return 4 * 1024 * 1024


def caller_args(server_port: int, port: int, media_port: int, *, scenario: str, rate: float,
                calls: int, limit: int, hold_ms: int, extra: Sequence[str] = (),
                number: str = SERVICE_NUMBER) -> list[str]:
    return ["-sf", str(SCENARIOS / scenario), "-s", number, "-i", "127.0.0.1",
            "-p", str(port), "-mp", str(media_port), "-r", f"{rate:g}", "-rp", "1000",
            "-m", str(calls), "-l", str(limit), "-d", str(hold_ms),
            "-recv_timeout", "30000", *extra, f"127.0.0.1:{server_port}"]


# --- workdirs ------------------------------------------------------------------------


@contextlib.contextmanager
def workdir(kind: str, keep: bool) -> Iterator[Path]:
    """A scratch dir under /tmp for configs, logs, journals and recordings."""
    base = Path(os.environ.get("MEDIACORE_LOAD_TMP", "/tmp"))
    path = base / f"mediacore-load-{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def wait_for_quiet(max_busy: float, timeout: float, window: float = 2.0) -> float:
    """Wait until the machine's busy CPU over ``window`` s is at most ``max_busy`` cores.

    The two cores are shared with other engineers' test runs; a step that
    starts while they run measures them too. Returns the busy level seen
    last (the run goes on after ``timeout`` regardless, and says so).
    """
    deadline = time.monotonic() + timeout
    while True:
        busy0, _ = system_cpu()
        time.sleep(window)
        busy = (system_cpu()[0] - busy0) / window
        if busy <= max_busy:
            return busy
        if time.monotonic() > deadline:
            log(f"machine still busy ({busy:.2f} cores) after {timeout:.0f}s; going on")
            return busy
        log(f"waiting for a quiet machine: {busy:.2f} cores busy")


def default_pinning(pin: bool) -> tuple[str | None, str | None]:
    """(server CPUs, SIPp CPUs): the server on the last core, SIPp on the others."""
    cpus = os.cpu_count() or 1
    if not pin or cpus < 2:
        return None, None
    return str(cpus - 1), ",".join(str(c) for c in range(cpus - 1))


@dataclass
class StepTimes:
    """Monotonic times of one load step, for cutting the sampler's series."""

    start: float = 0.0
    steady_from: float = 0.0
    steady_to: float = 0.0
    end: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Scraper:
    """GETs ``url`` every ``interval`` s in a thread, as Prometheus would: what a
    scrape costs the server is then part of the figures measured around it."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.durations: list[float] = []
        self.failures = 0
        self.last_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def _run(self) -> None:
        import urllib.request

        while not self._stop.wait(self.interval):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self.last_bytes = len(response.read())
            except OSError:
                self.failures += 1
                continue
            self.durations.append(time.monotonic() - started)

    def stop(self) -> dict[str, float | int | None]:
        self._stop.set()
        self._thread.join(10)
        d = sorted(self.durations)
        return {"scrapes": len(d), "failures": self.failures, "bytes": self.last_bytes,
                "ms_p50": 1000 * d[len(d) // 2] if d else None,
                "ms_max": 1000 * d[-1] if d else None}
