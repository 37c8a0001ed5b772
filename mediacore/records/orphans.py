"""Recordings a crash left behind: at the next start each is adopted or destroyed.

A process killed mid-call (SIGKILL, the OOM killer, a power cut) leaves the
WAV files of its calls in ``recordings/`` with no handle, no CDR and no
journal line, and retention only ever destroys what a handle names
(DESIGN.md promise 4). So at every start the server accounts for them
(:class:`RecordsService.recover`, run by the app right after SIP listens,
in the background: readiness does not wait for it):

**Marked recordings** (this node's ``open-recordings/`` markers, taken
before the SIP socket opened, so all of them are a dead incarnation's;
open_recordings.py). The call is known, so the recording is *adopted*:

* the WAV's header is repaired (``mediacore.wav.repair``: the audio after
  the last header sync is counted again, a torn frame cut off);
* it gets its handle, with the retention the number had when the call was
  made (in the marker), created at the call's end as the recording gives it;
* and the call its CDR: ``disposition`` answered, ``hangup_by`` system,
  ``recording_error`` ``crash``, ended at ``answer + recorded length`` (a
  lower bound: billing never charges more than was connected), unless the
  journal has the call's CDR already (the crash came after the call ended).

A marked file that holds no audio (the crash came before the first second
was synced), or is not a WAV at all, is destroyed, and its call still gets
its CDR, with an empty ``recording``. A voicemail cut by a crash is
destroyed too: voicemail is e-mailed and not kept (promise 3), and a
message nobody finished is not sent; its call gets a ``voicemail`` CDR.

**Unmarked recordings**: a ``.wav`` in ``recordings/`` that no node's
marker and no journal's handle names (a file from a mediacore before
markers, or from one running beside this one during an upgrade). When a
journal has a CDR naming it as its recording, it is adopted with that
number's retention today. Otherwise nothing about it can be known: not the
number, so not the owner, so not the retention, nor whether it should
exist; nobody can ask for it (no handle, no CDR, in no export) and nobody
could ever be told when it must go. It is *destroyed*: keeping personal
audio without a purpose or an end is what promise 4 rules out, and adopting
it with a made-up retention would keep it for a guess. A file with a
deletion in a journal (its retention ended, yet it exists) goes too.

Files being written right now are never touched: a live node's recordings
carry that node's marker until their handle is durable, and an unmarked
file must also have been left untouched for :data:`QUIET` seconds (a live
recording is written every second, silence included) and still be so, and
still unmarked, just before it is unlinked. Only one process at a time
scans the unmarked files (``journal/orphan-scan.lock``); it remembers how
far it got in ``journal/orphan-scan.json``, so the next scan looks only at
files changed since (the first one after an upgrade looks at all of them,
in batches of :data:`BATCH` files per pass over the journals, so memory
stays bounded). And since this version never leaves an unmarked file
unaccounted for, the scan runs only while a mediacore without markers may
have left some (:func:`unmarked_scan_due`).

Every step is idempotent, so a crash during recovery is recovered by the
next start: records are journaled (and durable) first, files unlinked
second, markers removed last; a marker whose handle or CDR is already in
the journal is only removed. Nothing is ever journaled twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from mediacore.config import node_problem
from mediacore.fsync import fsync_dir
from mediacore.records.carried import CARRIED, shared_lock
from mediacore.records.cdr import Cdr
from mediacore.records.journal import journal_files
from mediacore.records.layout import journal_dirs, journal_root, node_journal_dir
from mediacore.records.open_recordings import (
    DIRNAME,
    SUFFIX,
    OpenRecordings,
    RecordingStarted,
    marked_files,
)
from mediacore.records.recordings import RecordingHandle, describe_wav
from mediacore.records.timefmt import parse_utc
from mediacore.wav import repair

__all__ = [
    "BATCH",
    "CRASH",
    "QUIET",
    "Decision",
    "OrphanReport",
    "UnmarkedScan",
    "examine_marked",
    "read_facts",
    "unlink_orphan",
    "unmarked_scan_due",
]

log = logging.getLogger("mediacore.records")

#: ``recording_error`` of a CDR made at recovery: the call was cut by a crash.
CRASH = "crash"
#: Seconds an unmarked file must have been left untouched before it may go.
QUIET = 60.0
#: Seconds by which consecutive scans overlap (closes, clocks, the scan itself).
SLACK = 300.0
#: Unmarked files examined per pass over the journals.
BATCH = 250_000
SCAN_STATE = "orphan-scan.json"
SCAN_LOCK = "orphan-scan.lock"

_CDR = b'{"type":"cdr",'
_HANDLE = b'{"type":"recording",'
_DELETED = b'{"type":"recording-deleted",'


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one recording file; the service carries it out.

    ``action``: ``adopt`` (journal ``cdr`` if any and ``handle``), ``destroy``
    (journal ``cdr`` if any, then unlink the file) or ``forget`` (journal
    ``cdr`` if any; the file is accounted for or gone). ``marked``: this
    node's marker goes once that is done; ``unmarked``: the file had no
    marker, so it is checked again just before it is unlinked.
    """

    file: str
    action: str
    reason: str
    call_id: str = ""
    cdr: Cdr | None = None
    handle: RecordingHandle | None = None
    marked: bool = False
    unmarked: bool = False
    repaired: bool = False


@dataclass(slots=True)
class OrphanReport:
    """What a recovery did, for the log line and the metrics."""

    adopted: int = 0
    destroyed: int = 0
    calls: int = 0  # CDRs made for calls cut by a crash
    repaired: int = 0
    kept: int = 0  # left alone: being written or too recent to tell
    failed: int = 0  # could not be carried out: tried again at the next start
    destroyed_by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, other: OrphanReport) -> None:
        self.adopted += other.adopted
        self.destroyed += other.destroyed
        self.calls += other.calls
        self.repaired += other.repaired
        self.kept += other.kept
        self.failed += other.failed
        self.destroyed_by_reason.update(other.destroyed_by_reason)

    def describe(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.destroyed_by_reason.items()))
        return (f"{self.adopted} adopted, {self.destroyed} destroyed"
                f"{f' ({reasons})' if reasons else ''}, {self.calls} CDRs of calls cut by "
                f"a crash, {self.repaired} WAV headers repaired, {self.kept} left alone "
                f"(being written or too recent), {self.failed} failed")


# --- what the journals know --------------------------------------------------------


@dataclass(slots=True)
class JournalFacts:
    """What one or more journals say about some calls and recording files."""

    cdrs: dict[str, dict[str, Any]] = field(default_factory=dict)  # call_id -> fields
    by_recording: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> fields
    handles: set[str] = field(default_factory=set)  # files with a recording handle
    deleted: set[str] = field(default_factory=set)  # files whose handle was deleted

    def update(self, other: JournalFacts) -> None:
        self.cdrs.update(other.cdrs)
        self.by_recording.update(other.by_recording)
        self.handles |= other.handles
        self.deleted |= other.deleted


def _value(line: bytes, key: bytes) -> str | None:
    """The string value of ``"key":"..."`` in a journal line, undecoded; None if absent.

    Journal lines are ASCII JSON (journal.py), so a key's quotes can only
    be the key's: a quote inside a value is escaped. A value with an escape
    in it is returned as None, and the caller decodes the line instead.
    """
    marker = b'"' + key + b'":"'
    start = line.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = line.find(b'"', start)
    if end < 0:
        return None
    value = line[start:end]
    if b"\\" in value:
        return None
    return value.decode("ascii", "replace")


def _data(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    data = obj.get("data") if isinstance(obj, dict) else None
    return data if isinstance(data, dict) else None


def _files_from(paths: Iterable[tuple[int, Path]], since: float | None) -> list[Path]:
    """The journal files that may hold records from ``since`` on (all without it).

    A file is named by the UTC day it was opened and holds records until
    the next one is opened, so the last file opened on or before that day
    and every later one.
    """
    files = list(paths)
    if since is None or not files:
        return [p for _, p in files]
    day = datetime.fromtimestamp(max(0.0, since), UTC).strftime("%Y%m%d")
    first = 0
    for index, (_, path) in enumerate(files):
        date = path.name.rsplit("-", 1)[-1].split(".", 1)[0]
        if date <= day:
            first = index
    return [p for _, p in files[first:]]


def read_facts(directory: Path, *, call_ids: AbstractSet[str] = frozenset(),
               files: AbstractSet[str] = frozenset(),
               since: float | None = None) -> JournalFacts:
    """Read one node's journal (and its carried handles) for these calls and files.

    Lines are matched by their first bytes and one field each, undecoded;
    only those about ``call_ids`` (CDRs) or ``files`` (handles, deletions,
    CDRs naming the file as their recording) are decoded. ``since`` (Unix
    time) skips journal files that can only hold older records. Holds
    ``prune.lock`` shared meanwhile, so the pruner cannot swap carried
    handles and files under the reader.
    """
    facts = JournalFacts()
    if not call_ids and not files:
        return facts
    directory = Path(directory)
    with shared_lock(directory):
        sources = [directory / CARRIED, *_files_from(journal_files(directory), since)]
        for path in sources:
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue
            with handle:
                for line in handle:
                    if line.endswith(b"\n"):
                        _read_line(line, facts, call_ids, files)
    return facts


def _read_line(line: bytes, facts: JournalFacts, call_ids: AbstractSet[str],
               files: AbstractSet[str]) -> None:
    if line.startswith(_CDR):
        call_id = _value(line, b"call_id")
        recording = _value(line, b"recording")
        wanted = (call_id is None or call_id in call_ids
                  or recording is None or f"{recording}.wav" in files)
        if not wanted or (data := _data(line)) is None:
            return
        if str(data.get("call_id", "")) in call_ids:
            facts.cdrs[str(data["call_id"])] = data
        name = f"{data.get('recording', '')}.wav"
        if data.get("recording") and name in files:
            facts.by_recording[name] = data
    elif line.startswith(_HANDLE):
        path = _value(line, b"path")
        if path is not None and os.path.basename(path) not in files:
            return
        data = _data(line)
        if data is not None and (name := os.path.basename(str(data.get("path", "")))) in files:
            facts.handles.add(name)
    elif line.startswith(_DELETED):
        id = _value(line, b"id")
        if id is not None and f"{id}.wav" not in files:
            return
        data = _data(line)
        if data is not None and (name := f"{data.get('id', '')}.wav") in files:
            facts.deleted.add(name)


# --- marked recordings ---------------------------------------------------------------


def examine_marked(storage_dir: Path, node: str, files: list[str]) -> list[Decision]:
    """Decide on this node's marked recordings (a worker thread: it repairs and hashes).

    ``files`` are the markers found at start, before any call of this
    incarnation could make one: every one is a dead incarnation's.
    """
    storage_dir = Path(storage_dir)
    recordings = storage_dir / "recordings"
    markers = OpenRecordings(storage_dir, node)
    read = {file: markers.read(file) for file in files}
    known = [m for m in read.values() if m is not None]
    earliest = min((m.start.timestamp() for m in known), default=None)
    facts = read_facts(node_journal_dir(storage_dir, node),
                       call_ids={m.call_id for m in known}, files=set(files),
                       since=None if earliest is None else earliest - SLACK)
    decisions = []
    for file, started in read.items():
        try:
            decisions.append(_decide_marked(recordings / file, file, started, facts, node))
        except OSError as error:
            log.error("records: recording %s left by a crash: cannot examine it (%s); "
                      "tried again at the next start", file, error)
            decisions.append(Decision(file, "fail", f"{type(error).__name__}: {error}"))
    return decisions


def _decide_marked(path: Path, file: str, started: RecordingStarted | None,
                   facts: JournalFacts, node: str) -> Decision:
    if file in facts.handles:
        return Decision(file, "forget", "accounted", marked=True,
                        call_id=started.call_id if started else "")
    if file in facts.deleted:
        return Decision(file, "destroy", "expired", marked=True)
    if started is None:
        # Ours, but what it says cannot be read: as little is known as of
        # an unmarked file, and no other process writes it.
        return Decision(file, "destroy", "unknown", marked=True)
    known = facts.cdrs.get(started.call_id)
    call_id = started.call_id

    def cdr(recorded: Decimal | float, recording: str) -> Cdr | None:
        return None if known is not None else started.crash_cdr(
            recorded, node=node, recording=recording)

    try:
        mended = repair(path)
    except FileNotFoundError:
        return Decision(file, "forget", "no-file", call_id, cdr(0.0, ""), marked=True)
    except ValueError:
        return Decision(file, "destroy", "unreadable", call_id, cdr(0.0, ""), marked=True)
    if mended.frames == 0:
        return Decision(file, "destroy", "empty", call_id, cdr(0.0, ""), marked=True,
                        repaired=mended.changed)
    if started.kind == "voicemail":
        return Decision(file, "destroy", "voicemail", call_id, cdr(mended.duration, ""),
                        marked=True, repaired=mended.changed)
    recording_id = Path(file).stem
    if known is not None and str(known.get("recording", "")) != recording_id:
        # The call ended and its CDR says it has no recording (it was given
        # up then): this file is what a crash kept of a discarded one.
        return Decision(file, "destroy", "not-recorded", call_id, marked=True,
                        repaired=mended.changed)
    wav = describe_wav(path)
    made = cdr(wav.duration, recording_id)
    created = made.end if made is not None else parse_utc(str(known["end"]))  # type: ignore[index]
    handle = RecordingHandle.create(
        id=recording_id, call_id=call_id, number=started.number, owner=started.owner,
        path=path, facts=wav, created=created, retention_days=started.retention_days,
        node=node)
    return Decision(file, "adopt", "crash", call_id, made, handle, marked=True,
                    repaired=mended.changed)


# --- unmarked recordings -------------------------------------------------------------


def unmarked_scan_due(storage_dir: Path, *, first_start: bool) -> str | None:
    """Why files without a marker may be waiting in ``recordings/`` (a scan is due), or None.

    This version never leaves an unmarked file it does not account for (the
    marker comes before the file and goes after the handle), so only a
    mediacore without markers makes them: one that ran before the upgrade,
    or one that still runs beside us. So a scan is due when none was ever
    finished, at a node's first start with markers (what it left before
    the upgrade), and while any node without a marker directory has
    journaled since the last scan (it is alive, on an older version). A
    restart in the steady state reads no directory of recordings at all.
    """
    root = journal_root(Path(storage_dir))
    try:
        since = _read_state(root / SCAN_STATE)
    except FileNotFoundError:
        return "no scan finished yet"
    if since is None:
        return "the last scan's state is unreadable"
    if first_start:
        return "this node's first start with recording markers"
    try:
        nodes = sorted(os.listdir(root))
    except FileNotFoundError:
        return None
    for node in nodes:
        directory = root / node
        if node_problem(node) is not None or not directory.is_dir() or (
                directory / DIRNAME).is_dir():
            continue
        for _, path in journal_files(directory):
            try:
                if path.stat().st_mtime >= since - SLACK:
                    return f"node {node} journals without recording markers (older mediacore)"
            except FileNotFoundError:
                continue
    return None


class UnmarkedScan:
    """One scan of ``recordings/`` for files no marker and no journal names.

    Blocking (a worker thread calls :meth:`next_batch` until it returns
    None, then :meth:`finish`); holds ``journal/orphan-scan.lock`` from
    :meth:`begin` to :meth:`finish` or :meth:`abandon`.
    """

    def __init__(self, storage_dir: Path, node: str, *,
                 retention_of: Callable[[str], int],
                 clock: Callable[[], float] = time.time,
                 quiet: float = QUIET, batch: int = BATCH) -> None:
        self.storage_dir = Path(storage_dir)
        self.node = node
        self.recordings = self.storage_dir / "recordings"
        self.retention_of = retention_of
        self.clock = clock
        self.quiet = quiet
        self.batch = batch
        self.kept = 0
        self._lock_fd = -1
        self._busy = threading.Lock()  # abandon() may come from another thread
        self._entries: Iterator[os.DirEntry[str]] | None = None
        self._dir: Any = None
        self._started = 0.0
        self._since = 0.0

    def begin(self) -> bool:
        """Take the scan lock; False when another process is scanning (it covers us)."""
        root = journal_root(self.storage_dir)
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / SCAN_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        self._started = self.clock()
        self._since = _read_since(root / SCAN_STATE)
        try:
            self._dir = os.scandir(self.recordings)
        except FileNotFoundError:
            self._dir = None
        self._entries = iter(self._dir) if self._dir is not None else iter(())
        return True

    def next_batch(self) -> list[Decision] | None:
        """Decisions on the next batch of unmarked files; None when the scan is done."""
        with self._busy:
            if self._entries is None:
                return None  # abandoned
            return self._next_batch(self._entries)

    def _next_batch(self, entries: Iterator[os.DirEntry[str]]) -> list[Decision] | None:
        candidates: set[str] = set()
        lower = self._since - SLACK
        upper = self._started - self.quiet
        for entry in entries:
            name = entry.name
            if not name.endswith(".wav") or name.startswith("."):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # swept or moved meanwhile
            if mtime < lower:
                continue  # looked at by an earlier scan
            if mtime > upper:
                self.kept += 1  # maybe being written: the next scan looks again
                continue
            candidates.add(name)
            if len(candidates) >= self.batch:
                break
        else:
            if not candidates:
                return None
        candidates -= marked_files(self.storage_dir)
        if not candidates:
            return []
        facts = JournalFacts()
        for _, directory in journal_dirs(self.storage_dir):
            facts.update(read_facts(directory, files=candidates, since=lower))
        return [d for name in sorted(candidates)
                if (d := self._decide(name, facts)) is not None]

    def _decide(self, name: str, facts: JournalFacts) -> Decision | None:
        if name in facts.handles:
            return None
        if name in facts.deleted:
            return Decision(name, "destroy", "expired", unmarked=True)
        cdr = facts.by_recording.get(name)
        if cdr is None:
            return Decision(name, "destroy", "unknown", unmarked=True)
        path = self.recordings / name
        call_id = str(cdr.get("call_id", ""))
        try:
            mended = repair(path)
            if mended.frames == 0:
                return Decision(name, "destroy", "empty", call_id, unmarked=True)
            wav = describe_wav(path)
            handle = RecordingHandle.create(
                id=Path(name).stem, call_id=call_id, number=str(cdr.get("number", "")),
                owner=str(cdr.get("owner", "")), path=path, facts=wav,
                created=parse_utc(str(cdr["end"])),
                retention_days=self.retention_of(str(cdr.get("number", ""))), node=self.node)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError):
            return Decision(name, "destroy", "unreadable", call_id, unmarked=True)
        except OSError as error:
            log.error("records: recording %s: cannot examine it (%s); tried again at the "
                      "next start", name, error)
            return Decision(name, "fail", str(error))
        return Decision(name, "adopt", "known-call", call_id, handle=handle,
                        repaired=mended.changed)

    def finish(self) -> None:
        """Remember how far this scan got (files changed before its start, less QUIET)."""
        root = journal_root(self.storage_dir)
        state = {"since": self._started - self.quiet, "node": self.node,
                 "at": datetime.fromtimestamp(self._started, UTC).isoformat()}
        tmp = root / (SCAN_STATE + ".tmp")
        try:
            tmp.write_text(json.dumps(state) + "\n")
            os.replace(tmp, root / SCAN_STATE)
            fsync_dir(root)
        except OSError as error:
            log.warning("records: cannot save %s (%s): the next scan looks at every "
                        "recording again", root / SCAN_STATE, error)
        self.abandon()

    def abandon(self) -> None:
        """Stop here (the next scan starts from the last finished one); idempotent."""
        with self._busy:
            self._entries = None
            if self._dir is not None:
                self._dir.close()
                self._dir = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


def _read_state(path: Path) -> float | None:
    """The ``since`` of the last finished scan; None if unreadable; FileNotFoundError if none."""
    try:
        data = json.loads(path.read_text())
        return float(data["since"])
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("records: %s is unreadable (%s): scanning every recording", path, error)
        return None


def _read_since(path: Path) -> float:
    try:
        since = _read_state(path)
    except FileNotFoundError:
        return 0.0
    return 0.0 if since is None else since


# --- carrying it out ------------------------------------------------------------------


def unlink_orphan(storage_dir: Path, decision: Decision, *, quiet: float = QUIET,
                  clock: Callable[[], float] = time.time) -> str:
    """Unlink a file decided to be destroyed: ``deleted``, ``missing`` or ``kept``.

    An unmarked file is looked at once more first: a marker (any node's)
    or a write within ``quiet`` seconds means someone writes it after all,
    and it is kept. Raises OSError when the file cannot be unlinked.
    """
    path = Path(storage_dir) / "recordings" / decision.file
    if decision.unmarked:
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return "missing"
        if mtime > clock() - quiet or _marked_anywhere(Path(storage_dir), decision.file):
            return "kept"
    try:
        os.unlink(path)
    except FileNotFoundError:
        return "missing"
    return "deleted"


def _marked_anywhere(storage_dir: Path, file: str) -> bool:
    root = journal_root(storage_dir)
    try:
        nodes = os.listdir(root)
    except FileNotFoundError:
        return False
    return any(os.path.exists(root / node / DIRNAME / (file + SUFFIX)) for node in nodes)

