"""py-spy on the running server, and the top frames of its samples.

Why py-spy and why "raw": it samples the server from outside (no code
change, no restart), sees the native frames of uvloop and the Cython
modules with ``--native``, and its raw (collapsed-stack) output is one line
per distinct stack, which is enough to compute self and inclusive time per
function here and to load into speedscope or flamegraph.pl later.

``--native`` needs py-spy's blocking mode: the server is stopped for each
sample (about 100 times a second here), which costs it a few percent, so
profiles are taken in separate runs from the figures in the tables.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r" \((?P<file>[^():]+)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\d+\): ?(?P<name>.*)$")
#: A stack whose innermost frames include one of these functions is a thread
#: waiting (epoll, a lock, the GIL, a sleep, the disk), not using the CPU:
#: py-spy's --native mode reports such threads as active, so the analysis
#: sets them apart.
WAITS = frozenset({
    "epoll_wait", "epoll_pwait", "pthread_cond_wait", "pthread_cond_timedwait",
    "PyThread_acquire_lock_timed", "take_gil", "clock_nanosleep", "nanosleep",
    "fdatasync", "fsync", "select", "poll", "sem_wait", "sem_timedwait", "sem_clockwait",
    "futex_wait", "do_futex_wait", "__futex_abstimed_wait_common", "usleep",
})


def _waiting(frames: list[str]) -> bool:
    return any(frame.split(" (", 1)[0] in WAITS for frame in frames[-4:])


#: Frames every stack of a thread goes through (the interpreter, the event
#: loop's C machinery, thread start-up): true but useless in an inclusive table.
_OUTER = re.compile(r"\((<frozen runpy>|<string>|mediacore/__main__\.py|mediacore/cli\.py|"
                    r"asyncio/runners\.py|uvloop/__init__\.py|loop\.c|core\.c|object\.h|"
                    r"linux\.c|udp\.c|timer\.c|queue\.h|loop-watcher\.c|threading\.py|"
                    r"_asynciomodule\.c|libpython[^)]*|libc[^)]*|\?)\)$")
_APP_SERVE = "serve (mediacore/app.py)"


def find_py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    """One py-spy run in the background; ``wait`` returns the raw file."""

    process: subprocess.Popen[bytes]
    output: Path

    def wait(self, timeout: float) -> Path | None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        return self.output if self.output.exists() else None


def record(pid: int, seconds: float, output: Path, *, rate: int = 100,
           native: bool = True) -> Recording | None:
    """Start ``py-spy record`` on ``pid`` for ``seconds`` (None when py-spy is missing)."""
    py_spy = find_py_spy()
    if py_spy is None:
        return None
    command = [py_spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))),
               "-r", str(rate), "-f", "raw", "-o", str(output), "--threads"]
    command.append("--native" if native else "--nonblocking")
    log_file = output.with_suffix(".log").open("wb")
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT)
    return Recording(process, output)


def _short(frame: str, prefixes: tuple[str, ...]) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)': one entry per function."""
    for prefix in prefixes:
        frame = frame.replace(prefix, "")
    return _FRAME_LINE.sub(lambda m: f" ({m.group('file')})", frame)


def analyse(raw: Path, *, rate: int = 100, seconds: float | None = None, top: int = 25,
            strip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Top functions by self and by inclusive samples of on-CPU stacks, all threads.

    Stacks that wait (:data:`WAITS`) are counted apart, per thread, and left
    out of the tables; percentages are of the on-CPU samples. With ``rate``
    and ``seconds``, ``cores`` turns a count into the share of a core it is.
    """
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    thread_counts: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    per_thread_self: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match.group("count"))
        frames = match.group("stack").split(";")
        named = _THREAD.match(frames[0])
        thread = named.group("name") or "?" if named else "?"
        if _waiting(frames):
            waiting[thread] += count
            continue
        stack = [_short(f, strip) for f in frames[1:]] or ["?"]
        total += count
        thread_counts[thread] += count
        self_counts[stack[-1]] += count
        per_thread_self.setdefault(thread, Counter())[stack[-1]] += count
        for frame in set(stack):
            if not _OUTER.search(frame) and frame != _APP_SERVE:
                incl_counts[frame] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        out = []
        for frame, count in counter.most_common(top):
            row: dict[str, Any] = {"frame": frame, "samples": count,
                                   "percent": round(100 * count / max(total, 1), 1)}
            if seconds:
                row["cores"] = round(count / (rate * seconds), 3)
            out.append(row)
        return out

    return {
        "file": str(raw),
        "samples": total,
        "threads": dict(thread_counts),
        "waiting_by_thread": dict(waiting),
        "self": rows(self_counts),
        "inclusive": rows(incl_counts),
        "self_by_thread": {t: rows(c) for t, c in per_thread_self.items()},
    }


def markdown(profile: dict[str, Any], limit: int = 15) -> str:
    """The analysis as two small tables, for the results file."""
    lines = [f"{profile['samples']} on-CPU samples; by thread: {profile['threads']}; "
             f"waiting (left out): {profile['waiting_by_thread']}", "",
             "| self % | function |", "|---:|---|"]
    lines += [f"| {r['percent']} | `{r['frame']}` |" for r in profile["self"][:limit]]
    lines += ["", "| inclusive % | function |", "|---:|---|"]
    lines += [f"| {r['percent']} | `{r['frame']}` |" for r in profile["inclusive"][:limit]]
    return "\n".join(lines)


def main() -> int:
    """``python -m benchmarks.load.profiling RAW [--top N]``: print an analysis."""
    import argparse

    parser = argparse.ArgumentParser(description="top frames of a py-spy raw profile")
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(markdown(analyse(args.raw, top=args.top), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
