"""Recording handles carried forward out of pruned journal files (``carried.jsonl``).

Retention is rebuilt from the journal at every start (retention.py), and
``cdr export`` lists recordings from it. A journal file may be pruned
(pruning.py) while recordings whose handles it holds are still within
retention: those handles must outlive the file, or the sweeper would never
destroy the recordings (DESIGN.md promise 4) and the export would not list
them. So before files are removed, the live handles in them are written to
``journal/<node>/carried.jsonl``::

    {"type":"carried","v":1,"through":42}                      the header
    {"type":"recording","v":1,"at":"...","data":{...}}         journal lines, as they were

The file holds exactly the state "every journal file up to seq ``through``
replayed": the handles not deleted in those files, in journal order. A
reader of recording handles (:func:`read_handles`) reads this file and then
the journal from file ``through + 1`` on, which gives the same result as
replaying files that are gone. Files ``<= through`` that still exist (a
crash between writing this file and removing them) are skipped by such
readers; CDR readers read every journal file there is.

Readers take ``prune.lock`` shared, the pruner exclusively (never waiting:
it tries again at the next sweep), so a reader never sees a new
``carried.jsonl`` together with files it already replaced, or the reverse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mediacore.records.journal import Entry, Position, read_entries

__all__ = ["CARRIED", "PRUNE_LOCK", "carried_through", "read_carried", "read_handles",
           "shared_lock"]

log = logging.getLogger("mediacore.records")

CARRIED = "carried.jsonl"
PRUNE_LOCK = "prune.lock"
HANDLE_TYPES = ("recording", "voicemail-delivered")
CARRIED_VERSION = 1


@contextlib.contextmanager
def shared_lock(directory: Path) -> Iterator[None]:
    """Hold ``prune.lock`` shared: no pruning of this journal while it is held."""
    try:
        fd = os.open(Path(directory) / PRUNE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        # A read-only storage dir (cdr list on a copy): nothing can prune it either.
        log.debug("records: cannot open %s (%s); reading without it", PRUNE_LOCK, error)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _header(line: bytes) -> int | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("type") == "carried" and isinstance(
            obj.get("through"), int) and obj["through"] >= 0:
        return int(obj["through"])
    return None


def carried_through(directory: Path) -> int:
    """The seq up to which the journal's handles are in ``carried.jsonl`` (0: none)."""
    try:
        with open(Path(directory) / CARRIED, "rb") as file:
            first = file.readline()
    except FileNotFoundError:
        return 0
    through = _header(first)
    if through is None:
        # Written atomically, so this is damage from outside: say so, and do not
        # pretend the old files' handles are covered (their files decide).
        log.error("records: %s has no valid header; ignoring it", Path(directory) / CARRIED)
        return 0
    return through


def read_carried(directory: Path) -> Iterator[Entry]:
    """The carried handles, in journal order (an unusable line is logged and skipped)."""
    path = Path(directory) / CARRIED
    try:
        file = open(path, "rb")  # noqa: SIM115 - a generator's file
    except FileNotFoundError:
        return
    with file:
        if _header(file.readline()) is None:
            return
        for number, line in enumerate(file, start=2):
            try:
                obj = json.loads(line)
                type, data, at = obj["type"], obj["data"], str(obj.get("at", ""))
                if type not in HANDLE_TYPES or not isinstance(data, dict):
                    raise ValueError(f"a {type!r} line")
            except (ValueError, KeyError, TypeError) as error:
                log.error("records: %s line %d is not a carried handle (%s); skipped",
                          path, number, error)
                continue
            yield Entry(type, data, at, Position(0, 0))


def read_handles(directory: Path, types: Iterable[str] | None = None) -> Iterator[Entry]:
    """Handles (and deletions) as if no file had been pruned: carried ones, then the journal.

    Holds ``prune.lock`` shared while it runs, so close it (or run it out)
    promptly; ``types`` defaults to everything.
    """
    wanted = None if types is None else tuple(types)
    with shared_lock(directory):
        through = carried_through(directory)
        if through and (wanted is None or any(t in HANDLE_TYPES for t in wanted)):
            for entry in read_carried(directory):
                if wanted is None or entry.type in wanted:
                    yield entry
        yield from read_entries(directory, Position(through + 1, 0) if through else None,
                                types=wanted)


def encode_line(entry: Entry) -> bytes:
    """A journal line again (type first, so prefix filters work on the carried file too)."""
    obj: dict[str, Any] = {"type": entry.type, "v": 1, "at": entry.at, "data": entry.data}
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode("ascii")


def header_line(through: int) -> bytes:
    return (json.dumps({"type": "carried", "v": CARRIED_VERSION, "through": through},
                       separators=(",", ":")) + "\n").encode("ascii")
