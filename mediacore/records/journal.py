"""The local journal: append-only JSON lines that outlive Redis outages and crashes.

Every CDR and recording event is a line here *before* anything else sees it;
Redis is fed from the journal, never the other way round, so Redis being
down means delay, never loss. The format is chosen for the operator at 3
a.m. as much as for the code: one JSON object per line, ``grep`` and ``jq``
work, and a crash can only ever damage the last line of a file::

    {"type":"cdr","v":1,"at":"2026-11-23T15:04:11.123Z","data":{...}}

``type`` comes first on purpose: a reader that wants only recordings skips
other lines by their first bytes, without decoding JSON.

Each node (``[records] node``) has its own journal, below a storage dir
that several processes may share (layout.py). Files are
``journal/<node>/journal-<seq>-<yyyymmdd>.jsonl``: ``seq`` orders them,
the date (UTC, when the file was opened) is for people. A file is closed
and the next one begun when it would pass ``rotate_bytes`` or when the UTC
day changes.

Crash safety:

* A line is written with one ``write()`` of whole lines under an ``flock``,
  so two processes (the server and ``mediacore retention sweep``) can
  append to one journal without interleaving, and a file only ever ends in
  the middle of a line when a writer died (or the disk filled) mid-write.
* A writer that opens a file ending in such a torn line first *seals* it
  with a newline (and says so in the log) rather than cutting it off: the
  journal is append-only, and appending after a torn fragment would glue
  the next good record onto it.
* Readers skip a line that is not valid JSON, with a log line, and never
  lose the lines around it.
* ``sync()`` is ``fdatasync``: enough for the data and the file size. A new
  file's directory entry is made durable too (``fsync`` of the directory).

The publication cursor (``cursor.json``) remembers how far the publisher has
got, so a restart replays only what may not have reached Redis.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mediacore.fsync import fsync_dir
from mediacore.records.layout import node_journal_dir
from mediacore.records.timefmt import format_utc

__all__ = [
    "DEFAULT_ROTATE_BYTES",
    "Entry",
    "Journal",
    "JournalReader",
    "Position",
    "count_entries",
    "journal_dir",
    "journal_files",
    "load_cursor",
    "read_entries",
    "read_merged",
    "save_cursor",
]

log = logging.getLogger("mediacore.records.journal")

VERSION = 1
DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024
FILE_RE = re.compile(r"^journal-(\d{6,})-(\d{8})\.jsonl$")
APPEND_LOCK = "append.lock"
CURSOR = "cursor.json"
_SEAL_SCAN = 1 << 20


def journal_dir(storage_dir: Path, node: str) -> Path:
    """``<storage>/journal/<node>/``: one node's journal (layout.py has the whole layout)."""
    return node_journal_dir(storage_dir, node)


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A place in the journal: file ``seq`` and the byte offset in it (a line end)."""

    seq: int
    offset: int

    def __str__(self) -> str:
        return f"{self.seq}:{self.offset}"


START = Position(0, 0)


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line: its type, its payload and the position just after it."""

    type: str
    data: dict[str, Any]
    at: str
    position: Position


def encode(type: str, data: dict[str, Any], at: datetime) -> bytes:
    """One journal line, newline included; ASCII only, so no byte can surprise a reader."""
    return (json.dumps({"type": type, "v": VERSION, "at": format_utc(at), "data": data},
                       separators=(",", ":")) + "\n").encode("ascii")


def journal_files(directory: Path) -> list[tuple[int, Path]]:
    """The journal's files as ``(seq, path)``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = FILE_RE.match(name)
        if match:
            found.append((int(match.group(1)), Path(directory) / name))
    found.sort()
    return found


def _file_date(path: Path) -> str:
    match = FILE_RE.match(path.name)
    return match.group(2) if match else ""



class Journal:
    """The appending side. One per process; not thread-safe (one writer thread uses it).

    ``syncs`` counts fsyncs, for tests and benchmarks of the fsync policy.
    """

    def __init__(
        self,
        directory: Path,
        *,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        rotate_daily: bool = True,
        clock: Any = None,
    ) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self._clock = clock or (lambda: datetime.now(UTC))
        self.syncs = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / APPEND_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        self._fd = -1
        self._seq = 0
        self._path: Path | None = None
        self._broken = False
        self._day_start = self._day_end = datetime.min.replace(tzinfo=UTC)
        with self._locked():
            self._open_latest()

    # --- appending ---------------------------------------------------------------

    def append(self, records: Sequence[tuple[str, dict[str, Any]]], *,
               sync: bool = True, at: datetime | None = None) -> list[Position]:
        """Write ``(type, data)`` records as one write; returns each line's end position.

        With ``sync`` the records are on disk (fdatasync) when this returns.
        If it raises, nothing of the batch is promised: the caller retries
        the whole batch, and the next call starts a fresh file, so a batch
        that half-reached the old file cannot be mistaken for a good one.
        """
        at = at or self._clock()
        lines = [encode(type, data, at) for type, data in records]
        return self.append_lines(lines, sync=sync)

    def append_lines(self, lines: Sequence[bytes], *, sync: bool = True) -> list[Position]:
        payload = b"".join(lines)
        with self._locked():
            self._follow()
            if self._broken:
                # A file that holds nothing cannot have lost anything: on a
                # disk that stays full, each retry would otherwise leave
                # another empty file behind.
                status = os.fstat(self._fd)
                if status.st_size or not stat.S_ISREG(status.st_mode):
                    self._rotate()
                self._broken = False
            elif self._must_rotate(len(payload)):
                self._rotate()
            try:
                view = memoryview(payload)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                end = os.lseek(self._fd, 0, os.SEEK_CUR)
                if sync:
                    os.fdatasync(self._fd)
                    self.syncs += 1
            except OSError:
                self._broken = True
                raise
        positions = []
        offset = end - len(payload)
        for line in lines:
            offset += len(line)
            positions.append(Position(self._seq, offset))
        return positions

    def sync(self) -> Position:
        """Make everything written so far durable; returns the durable end.

        The end is the file's size when the sync began, which also covers
        lines other processes appended to it.
        """
        with self._locked():
            self._follow()
            end = os.fstat(self._fd).st_size
            try:
                os.fdatasync(self._fd)
            except OSError:
                self._broken = True
                raise
            self.syncs += 1
        return Position(self._seq, end)

    @property
    def path(self) -> Path | None:
        return self._path

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- files -------------------------------------------------------------------

    class _Lock:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def __enter__(self) -> None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

        def __exit__(self, *exc: object) -> None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _locked(self) -> Journal._Lock:
        return Journal._Lock(self._lock_fd)

    def _open_latest(self) -> None:
        files = journal_files(self.directory)
        if not files:
            self._create(1)
            return
        seq, path = files[-1]
        self._switch(seq, path)
        self._seal(path)

    def _switch(self, seq: int, path: Path) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._seq = seq
        self._path = path
        self._announce()

    def _create(self, seq: int) -> None:
        day = self._clock().astimezone(UTC).strftime("%Y%m%d")
        path = self.directory / f"journal-{seq:06d}-{day}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o640)
        fsync_dir(self.directory)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._seq, self._path = fd, seq, path
        self._announce()

    def _announce(self) -> None:
        """Tell other writers which file is current (the lock file holds its seq).

        Also notes the UTC day the file belongs to, for daily rotation.
        """
        assert self._path is not None
        try:
            self._day_start = datetime.strptime(_file_date(self._path), "%Y%m%d").replace(
                tzinfo=UTC)
        except ValueError:
            self._day_start = datetime.min.replace(tzinfo=UTC)
        self._day_end = self._day_start + timedelta(days=1)
        data = f"{self._seq}\n".encode()
        os.pwrite(self._lock_fd, data, 0)
        os.ftruncate(self._lock_fd, len(data))

    def _follow(self) -> None:
        """Another process rotated: move to its newer file before appending."""
        try:
            current = int(os.pread(self._lock_fd, 32, 0).decode().strip() or 0)
        except ValueError:
            current = 0
        if current > self._seq:
            files = journal_files(self.directory)
            if files and files[-1][0] > self._seq:
                self._switch(*files[-1])

    def _must_rotate(self, incoming: int) -> bool:
        size = os.fstat(self._fd).st_size
        if size and size + incoming > self.rotate_bytes:
            return True
        return self.rotate_daily and not self._day_start <= self._clock() < self._day_end

    def _rotate(self) -> None:
        if self._path is not None:
            self._seal(self._path)
        files = journal_files(self.directory)
        latest = max(self._seq, files[-1][0] if files else 0)
        self._create(latest + 1)

    def _seal(self, path: Path) -> None:
        """End a torn last line with a newline, so it cannot swallow the next record."""
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return
                handle.seek(size - 1)
                if handle.read(1) == b"\n":
                    return
                handle.seek(max(0, size - _SEAL_SCAN))
                tail = handle.read()
        except OSError as error:
            log.error("journal %s: cannot check its last line: %s", path, error)
            return
        torn = len(tail) - (tail.rfind(b"\n") + 1)
        log.warning("journal %s: last line is torn (%d bytes, a crash mid-write); sealing it "
                    "with a newline, readers skip it", path.name, torn)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, b"\n")
            os.fdatasync(fd)
        finally:
            os.close(fd)


def _decode(line: bytes, path: Path, offset: int) -> tuple[str, dict[str, Any], str] | None:
    try:
        obj = json.loads(line)
        if (isinstance(obj, dict) and isinstance(obj.get("type"), str)
                and isinstance(obj.get("data"), dict)):
            return obj["type"], obj["data"], str(obj.get("at", ""))
        problem = "not a journal record"
    except (ValueError, UnicodeDecodeError):
        problem = "not valid JSON"
    log.warning("journal %s at byte %d: skipping a line that is %s (%d bytes; torn by a "
                "crash?)", path.name, offset, problem, len(line))
    return None


class JournalReader:
    """Reads forward from a position, across files, never past a given end.

    Keeps its place between calls, so the publisher reads only new lines.
    An incomplete last line of the newest file is left alone (a writer may
    be in the middle of it); in an older file it is a torn tail, skipped.
    """

    def __init__(self, directory: Path, start: Position | None = None,
                 types: Iterable[str] | None = None) -> None:
        self.directory = Path(directory)
        self.position = start or START
        self._prefixes = None if types is None else tuple(
            f'{{"type":"{t}",'.encode() for t in types)
        self._handle: Any = None
        self._handle_seq = -1

    def read(self, limit: int = 1000, up_to: Position | None = None) -> list[Entry]:
        """Up to ``limit`` records after the current position and before ``up_to``."""
        entries: list[Entry] = []
        if not self._open():
            return entries
        self._handle.seek(self.position.offset)
        while len(entries) < limit:
            if up_to is not None and self.position >= up_to:
                break
            line = self._handle.readline()
            if not line or not line.endswith(b"\n"):
                if not self._next_file(up_to, torn=line) or not self._open():
                    break
                continue
            start = self.position.offset
            self.position = Position(self.position.seq, start + len(line))
            if self._prefixes is not None and not line.startswith(self._prefixes):
                continue
            decoded = _decode(line, Path(self._handle.name), start)
            if decoded is not None:
                entries.append(Entry(decoded[0], decoded[1], decoded[2], self.position))
        return entries

    def __iter__(self) -> Iterator[Entry]:
        while batch := self.read(1000):
            yield from batch

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> bool:
        """Have the file of the current position open (or the next one that exists)."""
        if self._handle is not None and self._handle_seq == self.position.seq:
            return True
        self.close()
        for seq, path in journal_files(self.directory):
            if seq < self.position.seq:
                continue
            try:
                self._handle = open(path, "rb")  # noqa: SIM115 - kept open between reads
            except FileNotFoundError:
                continue
            if seq > self.position.seq:
                self.position = Position(seq, 0)
            self._handle_seq = seq
            self._handle.seek(self.position.offset)
            return True
        return False

    def _next_file(self, up_to: Position | None, torn: bytes) -> bool:
        later = [seq for seq, _ in journal_files(self.directory) if seq > self.position.seq]
        if not later or (up_to is not None and later[0] > up_to.seq):
            return False
        if torn:
            log.warning("journal %s: skipping a torn last line (%d bytes)",
                        Path(self._handle.name).name, len(torn))
        self.position = Position(later[0], 0)
        return True


def read_entries(directory: Path, start: Position | None = None,
                 types: Iterable[str] | None = None) -> Iterator[Entry]:
    """Every readable record from ``start`` on, in order, across rotated files."""
    reader = JournalReader(directory, start, types)
    try:
        yield from reader
    finally:
        reader.close()


def read_merged(directories: Iterable[Path],
                types: Iterable[str] | None = None) -> Iterator[Entry]:
    """Every record of several journals (one per node), merged by journal time.

    Each journal is in time order already (one writer); ``at`` has a fixed
    width (``2026-11-23T15:04:11.123Z``), so its text sorts as the time.
    Ties keep the order of ``directories``.
    """
    wanted = tuple(types) if types is not None else None
    streams = [read_entries(directory, types=wanted) for directory in directories]
    if len(streams) == 1:
        yield from streams[0]
        return
    yield from heapq.merge(*streams, key=lambda entry: entry.at)


def count_entries(directory: Path, start: Position | None, up_to: Position,
                  types: Iterable[str]) -> tuple[int, str | None]:
    """How many records of ``types`` lie between two positions, and the oldest one's time."""
    reader = JournalReader(directory, start, types)
    count, oldest = 0, None
    try:
        while batch := reader.read(5000, up_to):
            if oldest is None:
                oldest = batch[0].at
            count += len(batch)
    finally:
        reader.close()
    return count, oldest


def load_cursor(directory: Path) -> Position | None:
    """Where publication got to; ``None`` when there is no usable cursor (replay all)."""
    path = Path(directory) / CURSOR
    try:
        data = json.loads(path.read_text())
        return Position(int(data["seq"]), int(data["offset"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("journal cursor %s is unreadable (%s): replaying the whole journal "
                    "(publication is idempotent)", path, error)
        return None


def save_cursor(directory: Path, position: Position) -> None:
    """Atomically replace the cursor: write, fsync, rename, fsync the directory."""
    directory = Path(directory)
    files = dict(journal_files(directory))
    data = {"seq": position.seq, "offset": position.offset,
            "file": files[position.seq].name if position.seq in files else "",
            "saved": format_utc(datetime.now(UTC))}
    tmp = directory / (CURSOR + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps(data) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / CURSOR)
    fsync_dir(directory)
