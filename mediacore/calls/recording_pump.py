"""One timer empties every recorded call's tap, instead of one task per call.

The RTP engine copies each relayed packet of a recorded session into that
session's tap buffer; Python has to move those records into the call's
:class:`~mediacore.rtp.recorder.CallRecorder` well within the recorder's
200 ms write-out delay. A task per call that slept 50 ms and drained its own
session cost 37% of a core for 1,000 recorded calls with no RTP flowing at
all (a future, a timer handle and a task step per call per tick), so the
pump asks the engine for every session's records in one call
(:meth:`MediaEngine.drain_recordings`) on one timer.

A call whose media is silent (hold, a one-way stream, no RTP yet) gets no
records, but its file must still grow with silence so that a crash leaves a
recording of the right length: once per ``silence_every`` the pump feeds an
empty blob, with the time, to every recorder that received nothing since.

A disk that fails (full, read-only, broken) ends recordings, never calls:
a recorder whose feed raises keeps what reached its file and is fed no more,
and its owner's ``on_failed`` stops the engine's tap. Below the free-space
reserve (``[storage] reserve_mb``, mediacore.diskspace) every recording
stops, so that the journal keeps room for the CDRs of the calls that go on.
Each failure is counted in :attr:`RecordingPump.stats` and logged, one line
a minute at most for all of them together.

The pump also keeps what the recorders counted once they are gone (packets
late for their place in the file, feed failures), for the metrics collector:
:meth:`RecordingPump.totals` adds the live recorders' counts at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mediacore.diskspace import INTERNAL_ERROR, FreeSpace, reason_of
from mediacore.ratelimit import RateLimitedLog
from mediacore.rtp.engine import MediaEngine
from mediacore.rtp.recorder import CallRecorder

log = logging.getLogger("mediacore.calls")

#: Seconds between drains. Records carry their arrival time, so how late they
#: reach the recorder does not move them, as long as it is well inside the
#: recorder's 200 ms delay; each session's 64 KiB tap holds ~3 s of a call.
DRAIN_INTERVAL = 0.1

#: Seconds between silence feeds for recorders that got no records.
SILENCE_EVERY = 1.0


#: Seconds between two log lines about failed recordings (the rest are counted).
FAILURE_LOG_INTERVAL = 60.0


@dataclass
class RecordingCounters:
    """Recording failures since start, as plain integers for metrics.

    ``started``: recordings opened; ``failed``: recordings that could not
    start or stopped before their call ended (at start, mid-call or at
    close), ``failed_by_reason`` the same by reason (``disk-full``,
    ``read-only``, ``no-permission``, ``io-error``, ``size-limit``,
    ``internal-error``: mediacore.diskspace.REASONS).
    """

    started: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class _Entry:
    call_id: str
    recorder: CallRecorder
    on_failed: Callable[[BaseException], None] | None = None
    fed: bool = False
    failed: bool = False


@dataclass
class RecordingTotals:
    """Counts over every recording since start (finished ones and live ones)."""

    active: int = 0
    finished: int = 0
    late: int = 0
    discarded: int = 0
    failures: int = 0


@dataclass
class _Finished:
    count: int = 0
    late: int = 0
    discarded: int = 0
    failures: int = 0
    #: Removed entries whose recorder their owner closes right after
    #: ``remove``; their final counts are read at the next remove or scrape.
    retired: list[_Entry] = field(default_factory=list)


class RecordingPump:
    """Feeds the recorders of one engine's sessions.

    After :meth:`start` it ticks on the loop's timer while any recorder is
    registered; without it (tests), :meth:`tick` is called by hand.
    """

    def __init__(self, engine: MediaEngine, *, interval: float = DRAIN_INTERVAL,
                 silence_every: float = SILENCE_EVERY,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 free_space: FreeSpace | None = None,
                 failure_log: RateLimitedLog | None = None) -> None:
        self.engine = engine
        self.interval = interval
        self.silence_every = silence_every
        self._clock_ns = clock_ns
        #: The recordings dir's room (None: recordings run until the disk says ENOSPC).
        self.free_space = free_space
        self.stats = RecordingCounters()
        self.failure_log = failure_log or RateLimitedLog(log, interval=FAILURE_LOG_INTERVAL)
        self._recorders: dict[int, _Entry] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_silence_ns = 0
        self._finished = _Finished()

    def __len__(self) -> int:
        return len(self._recorders)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._recorders and self._timer is None:
            self._arm()

    def add(self, session_id: int, recorder: CallRecorder, call_id: str,
            on_failed: Callable[[BaseException], None] | None = None) -> None:
        """Feed ``recorder`` with session ``session_id``'s records from now on.

        If feeding it fails, the recorder is failed (its file keeps what it
        has), dropped from the pump, the failure reported, and ``on_failed``
        called with the error (to stop the engine's tap).
        """
        self._recorders[session_id] = _Entry(call_id, recorder, on_failed)
        self.stats.started += 1
        if self._timer is None and self._loop is not None:
            self._arm()

    def room(self) -> OSError | None:
        """None while recordings may write; else why not (below the reserve, read-only)."""
        if self.free_space is None or not self.free_space.check():
            return None
        return self.free_space.error

    def report_failure(self, call_id: str, error: BaseException) -> str:
        """Count one recording that failed and log it (rate-limited); returns its reason."""
        reason = reason_of(error)
        stats = self.stats
        stats.failed += 1
        stats.failed_by_reason[reason] = stats.failed_by_reason.get(reason, 0) + 1
        self.failure_log.error(
            "call %s: recording failed (%s: %s); the call goes on unrecorded", call_id,
            reason, error, exc_info=error if reason == INTERNAL_ERROR else None)
        return reason

    def remove(self, session_id: int) -> None:
        """Stop feeding a session's recorder (its owner drains and closes it)."""
        entry = self._recorders.pop(session_id, None)
        self._fold_retired()
        if entry is not None:
            self._finished.retired.append(entry)
        if not self._recorders and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def tick(self) -> None:
        """Drain every session once and feed what came out; no I/O but the recorders'."""
        now_ns = self._clock_ns()
        for session_id, blob in self.engine.drain_recordings().items():
            entry = self._recorders.get(session_id)
            if entry is not None:
                entry.fed = True
                self._feed(session_id, entry, blob, now_ns)
        if now_ns >= self._next_silence_ns:
            self._next_silence_ns = now_ns + int(self.silence_every * 1e9)
            no_room = self.room() if self._recorders else None
            if no_room is not None:
                for session_id, entry in list(self._recorders.items()):
                    self._failed(session_id, entry, no_room)
            for session_id, entry in list(self._recorders.items()):
                if not entry.fed:
                    self._feed(session_id, entry, b"", now_ns)
                entry.fed = False

    def totals(self) -> RecordingTotals:
        """Every recording's counts so far: once per scrape, not per packet."""
        self._fold_retired()
        done = self._finished
        totals = RecordingTotals(len(self._recorders), done.count, done.late, done.discarded,
                                 done.failures)
        for entry in self._recorders.values():
            late, discarded = _counts(entry.recorder)
            totals.late += late
            totals.discarded += discarded
            totals.failures += entry.failed
        return totals

    def _fold_retired(self) -> None:
        done = self._finished
        for entry in done.retired:
            late, discarded = _counts(entry.recorder)
            done.count += 1
            done.late += late
            done.discarded += discarded
            done.failures += entry.failed
        done.retired.clear()

    def close(self) -> None:
        self._loop = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._recorders.clear()

    def _feed(self, session_id: int, entry: _Entry, blob: bytes, now_ns: int) -> None:
        try:
            entry.recorder.feed(blob, now_ns)
        except Exception as error:
            # A full disk or a broken file must not stop the other recordings,
            # nor this call: it goes on unrecorded, and its CDR says why.
            self._failed(session_id, entry, error)

    def _failed(self, session_id: int, entry: _Entry, error: BaseException) -> None:
        """Stop one recording for good: its file keeps what it has, it is fed no more."""
        entry.failed = True
        try:
            entry.recorder.fail(error)
        except Exception:  # pragma: no cover - fail() never raises for the disk
            log.exception("call %s: abandoning a failed recording failed", entry.call_id)
        self.remove(session_id)
        self.report_failure(entry.call_id, error)
        if entry.on_failed is not None:
            try:
                entry.on_failed(error)
            except Exception:
                log.exception("call %s: stopping a failed recording failed", entry.call_id)

    def _arm(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.tick()
        finally:
            if self._recorders:
                self._arm()


def _counts(recorder: CallRecorder) -> tuple[int, int]:
    """(late, discarded) packets of a recorder, live or closed; (0, 0) if it cannot say."""
    try:
        stats = recorder.stats
    except Exception:  # a recorder broken by a failed disk: metrics must not fail too
        return 0, 0
    return stats.late, stats.discarded
