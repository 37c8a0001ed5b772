"""Journal pruning: a sealed file goes once all of it is in Redis and it is old enough.

Without pruning a node's journal grows by every call for ever (about 1 GB a
day at 20 calls/s). A journal file is removed when all of these hold:

* it is *sealed*: not the newest file (only the newest is appended to;
  every writer moves to the newest under ``append.lock``);
* every record in it is *published*: the publication cursor on disk
  (``cursor.json``, which never runs ahead of Redis) is past its end. So a
  record is forgotten only after Redis confirmed it, and a replay never
  needs a removed file;
* it is *old*: its last record was journaled at least ``journal_keep_days``
  ago (0 keeps everything for ever);
* every older file goes too (the journal stays a contiguous run of files).

Without ``[redis]`` nothing is ever published and the journal is the only
copy of the CDRs, so it is kept for ever unless the operator sets
``journal_prune_without_redis = true``; then files go by age alone, CDRs
with them (``cdr list`` and ``cdr export`` cover what is kept).

Recording handles outlive their files: before files go, the live handles in
them are written to ``carried.jsonl`` (carried.py), crash-safely, and only
then are the files unlinked. The steps, and what a crash between them
leaves:

1. ``carried.jsonl.tmp`` is written and fsynced: a crash leaves a stray
   temporary file (overwritten next time) and everything as it was;
2. it is renamed to ``carried.jsonl`` and the directory fsynced: the new
   file says "handles through seq N", readers of handles skip files up to N
   from then on, whether they still exist or not;
3. the files up to N are unlinked: a crash leaves some of them, removed by
   the next prune; readers of CDRs still see them meanwhile.

At no point is a handle in neither place, and never in both for a reader of
handles: retention stays exact across pruning and restarts.

Work is bounded: one prune handles at most ``max_files`` files (the rest
wait for the next sweep), and it never blocks the event loop (it runs in a
worker thread; the lock is tried, never waited for).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mediacore.fsync import fsync_dir
from mediacore.records.carried import (
    CARRIED,
    HANDLE_TYPES,
    PRUNE_LOCK,
    carried_through,
    encode_line,
    header_line,
    read_carried,
)
from mediacore.records.journal import (
    FILE_RE,
    Entry,
    JournalReader,
    Position,
    journal_files,
    load_cursor,
)
from mediacore.records.timefmt import parse_utc, utc_now

__all__ = [
    "FileFacts",
    "PrunePlan",
    "PruneResult",
    "Pruner",
    "carry_forward",
    "file_facts",
    "plan_prune",
    "prune",
    "remove_files",
]

log = logging.getLogger("mediacore.records")

MAX_FILES = 8
DAY = 86_400.0
_TAIL = 64 * 1024
INDEX_TYPES = (*HANDLE_TYPES, "recording-deleted")


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the decision needs about one journal file."""

    seq: int
    path: Path
    size: int
    last_at: float  # Unix time of its last record (no record: the end of its file-name day)


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """Files to remove, oldest first; ``kept`` says why the next one stays."""

    remove: tuple[FileFacts, ...] = ()
    kept: str = ""

    @property
    def through(self) -> int:
        return self.remove[-1].seq if self.remove else 0


def plan_prune(files: Sequence[FileFacts], *, now: float, keep_seconds: float,
               cursor: Position | None, require_published: bool,
               max_files: int = MAX_FILES) -> PrunePlan:
    """Which files may go now (pure: the rules in the module doc).

    ``files`` are the journal's files in seq order, the newest last;
    ``cursor`` the publication cursor on disk (``None``: none saved yet);
    ``require_published`` is false only without Redis and with the
    operator's consent.
    """
    if keep_seconds <= 0:
        return PrunePlan(kept="journal_keep_days = 0: kept for ever")
    remove: list[FileFacts] = []
    for index, facts in enumerate(files):
        if index == len(files) - 1:
            return PrunePlan(tuple(remove), f"{facts.path.name} is the file being written")
        if len(remove) >= max_files:
            return PrunePlan(tuple(remove), f"at most {max_files} files per prune")
        if require_published and not _published(facts, cursor):
            return PrunePlan(tuple(remove), f"{facts.path.name} is not all in Redis yet "
                             f"(cursor {cursor or 'not saved yet'})")
        if now - facts.last_at < keep_seconds:
            return PrunePlan(tuple(remove), f"{facts.path.name} is younger than "
                             f"{keep_seconds / DAY:g} days")
        remove.append(facts)
    return PrunePlan(tuple(remove))


def _published(facts: FileFacts, cursor: Position | None) -> bool:
    if cursor is None:
        return False
    return cursor.seq > facts.seq or (cursor.seq == facts.seq and cursor.offset >= facts.size)


def file_facts(directory: Path) -> list[FileFacts]:
    """Every journal file with its size and the time of its last record."""
    found = []
    for seq, path in journal_files(directory):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        found.append(FileFacts(seq, path, size, _last_at(path, size)))
    return found


def _last_at(path: Path, size: int) -> float:
    """The ``at`` of the file's last readable record; else the end of its file-name day."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, size - _TAIL))
            tail = file.read(_TAIL)
    except OSError:
        tail = b""
    for line in reversed(tail.split(b"\n")):
        try:
            obj = json.loads(line)
            return parse_utc(obj["at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
    match = FILE_RE.match(path.name)
    try:
        day = datetime.strptime(match.group(2), "%Y%m%d").replace(tzinfo=UTC)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return float("inf")  # cannot tell its age: never old enough
    return (day + timedelta(days=1)).timestamp()


@dataclass(slots=True)
class PruneResult:
    removed: list[Path] = field(default_factory=list)
    bytes: int = 0
    carried: int = 0  # live handles in carried.jsonl after this prune
    busy: bool = False  # a reader held prune.lock: nothing done, tried again next time


def carry_forward(directory: Path, through: int) -> int:
    """Steps 1 and 2: ``carried.jsonl`` covers the handles of every file up to ``through``.

    Returns how many handles it holds. Reads the old carried file and the
    files after its ``through`` up to the new one; replays them as the
    retention index would (a later handle replaces an earlier one, a
    deletion removes it), and writes what is live.
    """
    directory = Path(directory)
    old = carried_through(directory)
    if through <= old:
        return -1  # covered already (a prune that crashed before step 3)
    fresh: list[Entry] = []
    last: dict[str, int] = {}  # id -> index in fresh of its latest handle, or -1: deleted
    reader = JournalReader(directory, Position(old + 1, 0), INDEX_TYPES)
    try:
        while batch := reader.read(5000, Position(through + 1, 0)):
            for entry in batch:
                if entry.position.seq > through:
                    break
                id = str(entry.data.get("id", ""))
                if not id:
                    continue
                if entry.type == "recording-deleted":
                    last[id] = -1
                else:
                    last[id] = len(fresh)
                    fresh.append(entry)
    finally:
        reader.close()
    tmp = directory / (CARRIED + ".tmp")
    count = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(header_line(through))
            for entry in read_carried(directory):
                if str(entry.data.get("id", "")) not in last:
                    out.write(encode_line(entry))
                    count += 1
            for index, entry in enumerate(fresh):
                if last[str(entry.data["id"])] == index:
                    out.write(encode_line(entry))
                    count += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / CARRIED)
    fsync_dir(directory)
    return count


def remove_files(directory: Path, files: Sequence[FileFacts]) -> tuple[list[Path], int]:
    """Step 3: unlink the files (oldest first), then make the removals durable."""
    removed, size = [], 0
    for facts in files:
        try:
            os.unlink(facts.path)
        except FileNotFoundError:
            continue
        removed.append(facts.path)
        size += facts.size
    if removed:
        fsync_dir(Path(directory))
    return removed, size


def prune(directory: Path, *, now: float, keep_seconds: float, require_published: bool,
          max_files: int = MAX_FILES) -> tuple[PrunePlan, PruneResult]:
    """Decide and do it, holding ``prune.lock`` exclusively (or nothing, if a reader has it)."""
    directory = Path(directory)
    result = PruneResult()
    try:
        fd = os.open(directory / PRUNE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return PrunePlan(kept="no journal yet"), result
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            result.busy = True
            return PrunePlan(kept="a reader holds prune.lock"), result
        cursor = load_cursor(directory) if require_published else None
        plan = plan_prune(file_facts(directory), now=now, keep_seconds=keep_seconds,
                          cursor=cursor, require_published=require_published,
                          max_files=max_files)
        if plan.remove:
            result.carried = carry_forward(directory, plan.through)
            result.removed, result.bytes = remove_files(directory, plan.remove)
        return plan, result
    finally:
        os.close(fd)


class Pruner:
    """The server's pruning, run after each retention sweep; logs what it removes."""

    def __init__(self, directory: Path, *, keep_days: float, redis: bool,
                 without_redis: bool, clock: Callable[[], datetime] = utc_now,
                 max_files: int = MAX_FILES) -> None:
        self.directory = Path(directory)
        self.keep_seconds = keep_days * DAY
        self.require_published = redis
        self.enabled = keep_days > 0 and (redis or without_redis)
        self.clock = clock
        self.max_files = max_files
        self.files_removed = 0
        self.bytes_removed = 0
        self.runs = 0
        self._keep_days = keep_days

    def describe(self) -> str:
        """One phrase for the start-up log line: what happens to old journal files."""
        if self._keep_days <= 0:
            return "journal kept for ever (journal_keep_days = 0)"
        if not self.enabled:
            return ("journal kept for ever: without [redis] it is the only copy of the CDRs "
                    "(journal_prune_without_redis = true prunes it by age)")
        if self.require_published:
            return f"journal files pruned once published and {self._keep_days:g} days old"
        return f"journal files pruned at {self._keep_days:g} days old (no Redis: CDRs go too)"

    async def run(self) -> PruneResult | None:
        """Prune what may go now, in a worker thread; ``None`` when pruning is off."""
        if not self.enabled:
            return None
        now = self.clock().timestamp()
        plan, result = await asyncio.to_thread(
            prune, self.directory, now=now, keep_seconds=self.keep_seconds,
            require_published=self.require_published, max_files=self.max_files)
        self.runs += 1
        if result.removed:
            self.files_removed += len(result.removed)
            self.bytes_removed += result.bytes
            names = [p.name for p in result.removed]
            span = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
            carried = ("" if result.carried < 0 else
                       f"; {result.carried} live recording handles carried in {CARRIED}")
            log.info("records: pruned %d journal file%s (%s, %.1f MiB): %s older than %g "
                     "days%s", len(names), "" if len(names) == 1 else "s", span,
                     result.bytes / (1 << 20),
                     "published to Redis and" if self.require_published else "",
                     self._keep_days, carried)
        elif result.busy:
            log.debug("records: journal pruning skipped: %s", plan.kept)
        return result
