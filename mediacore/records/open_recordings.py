"""Markers of the recordings a node is writing: what a restart needs to know after a crash.

A recording's handle is journaled when its call ends (the file's size and
hash are final only then), so a process that dies mid-call (SIGKILL, OOM,
power) leaves WAV files in ``recordings/`` that no journal mentions: no
handle, no CDR, so retention would never destroy them (DESIGN.md promise
4) and billing would never see the call. So before a recording's file is
created, the call layer writes a *marker* saying whose it is::

    <storage>/journal/<node>/open-recordings/<file>.json

with the call's facts as they are known at that moment (the CDR's fields
but the end, and the number's retention). The marker is removed once the
recording's handle is durable in the journal (:class:`RecordsService`), or
once a voicemail has been moved to the spool, or at once when the recording
left no file. So the directory holds about one marker per recording in
progress, and after a crash exactly the recordings that were cut short
(records/orphans.py adopts them at the next start).

Why a file per recording in the node's own directory, and not a journal
record or metadata inside the WAV:

* it is in place, on the page cache, before the WAV exists, whatever the
  journal's fsync batching (a journal record is durable only some
  milliseconds later, after the file was created);
* the node's directory has one owner (``service.lock``, layout.py), so a
  marker found there at start is a dead incarnation's, never a live
  sibling's; other nodes' markers say "being written, leave it alone";
* listing it costs what the calls in progress cost, not what all the
  recordings kept for 30 days cost;
* the WAV stays a canonical 44-byte-header file, byte for byte as before.

Writes are atomic (a temporary file renamed), not fsynced: like the WAV
writer's header, a marker survives the death of the process (the page cache
belongs to the kernel), and a power cut that loses it loses the WAV's last
seconds as well. A marker holds what the CDR will hold and nothing more: a
withheld caller is ``anonymous`` here too (privacy.py), so a marker never
stores a number the CDR would not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from mediacore.config import node_problem
from mediacore.records.cdr import Cdr
from mediacore.records.layout import journal_root, node_journal_dir
from mediacore.records.timefmt import format_utc, parse_utc, to_utc_ms

__all__ = [
    "DIRNAME",
    "KINDS",
    "OpenRecordings",
    "RecordingStarted",
    "marked_files",
]

log = logging.getLogger("mediacore.records")

DIRNAME = "open-recordings"
SUFFIX = ".json"
VERSION = 1
KINDS = ("call", "voicemail")
#: A marker is a few hundred bytes; anything much larger is not one of ours.
MAX_MARKER_BYTES = 16 * 1024


def _check_file(name: str) -> None:
    if (not name.endswith(".wav") or len(name) > 200 or name.startswith(".")
            or any(c in name for c in "/\\\0\r\n")):
        raise ValueError(f"recording file name {name!r} is not a plain '<name>.wav'")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingStarted:
    """What is known of a recording when its file is created: the CDR but the end.

    ``file`` is the WAV's name in ``recordings/``; ``kind`` ``call`` (kept for
    the number's retention) or ``voicemail`` (mailed, then not kept);
    ``caller`` is the CDR's ``caller`` value (never a withheld number);
    ``answer`` when the call was answered, ``recording_start`` when the
    first frame of the file was: for a call both are the answer, for a
    voicemail the recording starts after the greeting and the beep.
    """

    file: str
    kind: str
    call_id: str
    sip_call_id: str
    number: str
    owner: str
    caller: str
    target: str
    retention_days: int
    start: datetime
    answer: datetime
    recording_start: datetime
    channels: int
    node: str = ""

    def __post_init__(self) -> None:
        _check_file(self.file)
        if self.kind not in KINDS:
            raise ValueError(f"recording kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.call_id:
            raise ValueError("a recording marker needs its call id")
        if (not isinstance(self.retention_days, int) or isinstance(self.retention_days, bool)
                or self.retention_days < 0):
            raise ValueError("retention_days must be a non-negative integer")
        if self.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {self.channels!r}")
        start = to_utc_ms(self.start)
        answer = to_utc_ms(self.answer)
        recording_start = to_utc_ms(self.recording_start)
        if not start <= answer <= recording_start:
            raise ValueError(f"recording marker of call {self.call_id}: start, answer and "
                             "recording start are out of order")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "answer", answer)
        object.__setattr__(self, "recording_start", recording_start)

    def to_json(self) -> str:
        return json.dumps({
            "v": VERSION, "file": self.file, "kind": self.kind, "call_id": self.call_id,
            "sip_call_id": self.sip_call_id, "number": self.number, "owner": self.owner,
            "caller": self.caller, "target": self.target,
            "retention_days": self.retention_days, "start": format_utc(self.start),
            "answer": format_utc(self.answer),
            "recording_start": format_utc(self.recording_start),
            "channels": self.channels, "node": self.node,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RecordingStarted:
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a recording marker is a JSON object")
        try:
            return cls(
                file=str(data["file"]), kind=str(data["kind"]), call_id=str(data["call_id"]),
                sip_call_id=str(data.get("sip_call_id", "")), number=str(data["number"]),
                owner=str(data["owner"]), caller=str(data.get("caller", "")),
                target=str(data.get("target", "")),
                retention_days=int(data["retention_days"]),
                start=parse_utc(data["start"]), answer=parse_utc(data["answer"]),
                recording_start=parse_utc(data["recording_start"]),
                channels=int(data.get("channels", 2)), node=str(data.get("node", "")),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"a recording marker lacks or garbles {error}") from None

    def crash_cdr(self, recorded: Decimal | float, *, node: str, recording: str) -> Cdr:
        """The CDR of a call this marker outlived: cut by a crash after ``recorded`` s.

        The end is not known; the recording's length is (its file is the
        recorded time, gaps as silence), so the call ended no earlier than
        ``recording_start + recorded``: that is the end billed, a lower
        bound, never more than the caller was connected. ``recording_error``
        is ``crash`` so that billing and the owner can tell it from a call
        that ended as calls do.
        """
        ms = max(0, int(Decimal(str(recorded)).scaleb(3)))  # exact: no float rounding
        end = self.recording_start + timedelta(milliseconds=ms)
        return Cdr(
            call_id=self.call_id, sip_call_id=self.sip_call_id, number=self.number,
            owner=self.owner, caller=self.caller, target=self.target, start=self.start,
            answer=self.answer, end=end,
            disposition="voicemail" if self.kind == "voicemail" else "answered",
            sip_status=200, hangup_by="system", recording=recording, node=node,
            recording_error="crash",
        )


class OpenRecordings:
    """One node's markers (``journal/<node>/open-recordings/``).

    :meth:`add` and :meth:`discard` are called on the event loop, once per
    recording each: a small write and a rename, an unlink.
    """

    def __init__(self, storage_dir: Path, node: str) -> None:
        self.directory = node_journal_dir(Path(storage_dir), node) / DIRNAME
        self.node = node
        self._made = False

    def ensure(self) -> bool:
        """Make the directory (at start); False if it existed already.

        Its presence tells other nodes that this node marks its recordings
        (orphans.unmarked_scan_due).
        """
        existed = self.directory.is_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._made = True
        return not existed

    def path(self, file: str) -> Path:
        _check_file(file)
        return self.directory / (file + SUFFIX)

    def add(self, started: RecordingStarted) -> None:
        """Write the marker of a recording about to be created (raises OSError)."""
        target = self.path(started.file)
        if not self._made:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._made = True
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            try:
                data = (started.to_json() + "\n").encode()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def discard(self, file: str) -> None:
        """Remove a recording's marker (its handle is durable, or nothing is left)."""
        try:
            path = self.path(file)
        except ValueError:
            return  # no marker can have that name
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            # A marker left behind is looked at again at the next start and
            # found accounted for: harmless, so no more than a log line.
            log.warning("records: cannot remove the marker of recording %s: %s", file, error)

    def files(self) -> list[str]:
        """The recording files that have a marker here, sorted."""
        return sorted(_marked(self.directory))

    def read(self, file: str) -> RecordingStarted | None:
        """The marker of ``file``; None if it is gone or unreadable (logged)."""
        path = self.path(file)
        try:
            with open(path, "rb") as handle:
                text = handle.read(MAX_MARKER_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as error:
            log.error("records: cannot read the recording marker %s: %s", path, error)
            return None
        try:
            if len(text) > MAX_MARKER_BYTES:
                raise ValueError("too large")
            started = RecordingStarted.from_json(text)
            if started.file != file:
                raise ValueError(f"it names {started.file!r}")
        except ValueError as error:
            log.error("records: the recording marker %s is unreadable (%s); the recording "
                      "is treated as unknown", path, error)
            return None
        return started


def _marked(directory: Path) -> set[str]:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):  # journal/ holds lock files too
        return set()
    return {name[:-len(SUFFIX)] for name in names
            if name.endswith(".wav" + SUFFIX) and not name.startswith(".")}


def marked_files(storage_dir: Path) -> set[str]:
    """Every recording file that some node (live or not) has a marker for."""
    root = journal_root(Path(storage_dir))
    found: set[str] = set()
    try:
        nodes = os.listdir(root)
    except FileNotFoundError:
        return found
    for node in nodes:
        if node_problem(node) is None:
            found |= _marked(root / node / DIRNAME)
    return found


def earliest(markers: list[RecordingStarted]) -> datetime | None:
    """When the oldest of these calls began (where a journal scan may start)."""
    return min((m.start for m in markers), default=None)
