"""``mediacore serve`` with a heap census on SIGUSR2, to say *what* a growing RSS holds.

RSS says that memory grows, not why: CPython keeps freed memory in its
arenas, so a high-water mark looks like a leak. This launcher runs the
unchanged server (``mediacore.cli.main``) and adds one signal handler: on
SIGUSR2 it collects garbage and writes the live objects counted by type
(and, when started with ``-X tracemalloc``, the top allocation sites) to
``$MEDIACORE_HEAPWATCH.<n>.json``. Objects that keep growing from census to
census (``Call``, ``Request``...) are what is retained.

    MEDIACORE_HEAPWATCH=/tmp/heap python -m benchmarks.load.heapwatch serve -c FILE
    kill -USR2 <pid>

Only for diagnosis: a census walks every object (tens of ms per 100,000).
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import signal
import sys
import time
import tracemalloc
from collections import Counter
from types import FrameType

_counter = itertools.count(1)


def census(top: int = 60) -> dict[str, object]:
    gc.collect()
    objects = gc.get_objects()
    by_type = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    out: dict[str, object] = {
        "time": time.time(),
        "objects": len(objects),
        "top": by_type.most_common(top),
        "mediacore": {k: v for k, v in by_type.items() if k.startswith("mediacore.")},
    }
    if tracemalloc.is_tracing():
        stats = tracemalloc.take_snapshot().statistics("lineno")[:200]
        out["tracemalloc_top"] = [(str(s.traceback), s.size, s.count) for s in stats]
        out["tracemalloc_total"] = tracemalloc.get_traced_memory()[0]
    return out


def _dump(signum: int, frame: FrameType | None) -> None:
    base = os.environ.get("MEDIACORE_HEAPWATCH", "/tmp/mediacore-heapwatch")
    path = f"{base}.{next(_counter)}.json"
    with open(path, "w") as handle:
        json.dump(census(), handle, indent=1)


def main() -> int:
    signal.signal(signal.SIGUSR2, _dump)
    from mediacore.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
