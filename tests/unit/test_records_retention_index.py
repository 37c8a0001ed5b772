"""The retention index keeps in RAM only what is due soon; the rest waits in bucket files.

No timing asserts: entries in RAM are counted (``in_memory``), and every
recording must come due exactly once, at its expiry, never before, also
across restarts and a crash between the journal append and a bucket write.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mediacore.records.journal import Entry, Journal, Position, read_entries
from mediacore.records.recordings import RecordingHandle, WavFacts
from mediacore.records.retention import Due, RecordingIndex, Sweeper

DAY = 86_400.0
HOUR = 3_600.0
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
FACTS = WavFacts("wav", 8000, 2, Decimal("1.000"), 44, "0" * 64)


def spread(n: int, days: float, seed: int = 7) -> list[Due]:
    rng = random.Random(seed)
    return [Due(f"r{i}", f"call-{i}", "call", f"/var/rec/r{i}.wav",
                round(T0 + rng.uniform(0, days * DAY), 3)) for i in range(n)]


def window(items: list[Due], start: float, end: float) -> set[str]:
    return {d.id for d in items if start < d.expires <= end}


@pytest.mark.parametrize(("bucket", "lookahead"), [(HOUR, HOUR), (DAY, DAY)])
def test_ram_stays_bounded_and_each_comes_due_at_its_expiry(
        tmp_path: Path, bucket: float, lookahead: float) -> None:
    items = spread(100_000, 60)
    index = RecordingIndex(tmp_path / "retention", now=T0, bucket_seconds=bucket,
                           lookahead=lookahead, flush_lines=1000)
    peak = 0
    for due in items:
        index.add(due)
        peak = max(peak, index.in_memory)
    assert len(index) == 100_000
    reach = lookahead + bucket
    assert peak <= 1000 + len(window(items, T0 - 1, T0 + reach))
    assert index.on_disk >= 100_000 - 1000 - len(window(items, T0 - 1, T0 + reach))

    came: Counter[str] = Counter()
    now = T0
    while now <= T0 + 61 * DAY:
        found = {d.id for d in index.due(now)}
        assert found == window(items, now - DAY, now) if now > T0 else not found
        came.update(found)
        for id in found:
            index.remove(id, now)  # deleted, as the sweeper does
        # RAM: what expires before the edge and is not due yet, plus the write buffer.
        assert len(index._live) <= len(window(items, now, now + reach))
        assert index.in_memory <= 1000 + len(window(items, now, now + reach))
        now += DAY
    assert set(came) == {d.id for d in items} and max(came.values()) == 1
    assert list((tmp_path / "retention").iterdir()) == []


def test_due_exactly_at_expiry_across_the_edge(tmp_path: Path) -> None:
    expiries = [T0 + 3 * HOUR, T0 + 3 * HOUR + 0.001, T0 + 5 * DAY - 0.001, T0 + 5 * DAY]
    index = RecordingIndex(tmp_path, now=T0)
    for i, at in enumerate(expiries):
        index.add(Due(f"x{i}", "c", "call", "", at))
    assert len(index._live) == 0 and len(index) == 4  # all past the edge (buffered)
    for i, at in enumerate(expiries):
        assert index.due(at - 0.001) == []
        got = [d.id for d in index.due(at)]
        assert got == [f"x{i}"], (i, got)
        index.remove(got[0], at)
    assert len(index) == 0 and index.in_memory == 0


def test_removals_of_recordings_on_disk_are_honoured(tmp_path: Path) -> None:
    items = spread(2_000, 30, seed=3)
    index = RecordingIndex(tmp_path, now=T0, flush_lines=100)
    for due in items:
        index.add(due)
    far = [d for d in items if d.expires > T0 + 2 * DAY]
    removed = {d.id for d in far[::3]}
    for id in sorted(removed)[:300]:
        index.remove(id)  # as the sweeper of another process would have
    for id in sorted(removed)[300:]:
        index.apply(Entry("recording-deleted", {"id": id, "call_id": "c", "reason": "expired",
                                                "file": "deleted", "at": "", "node": "n"},
                          "", Position(1, 1)))
    came: list[str] = []
    now = T0
    while now <= T0 + 31 * DAY:
        for d in index.due(now):
            came.append(d.id)
            index.remove(d.id, d.expires)
        now += DAY / 4
    assert sorted(came) == sorted(d.id for d in items if d.id not in removed)
    assert index.in_memory == 0  # the remembered removals went with their buckets


def test_a_removal_of_one_in_ram_or_not_known_is_not_remembered(tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path, now=T0)
    index.add(Due("near", "c", "call", "", T0 + 60))
    index.add(Due("far", "c", "call", "", T0 + 9 * DAY))
    index.remove("near")
    index.remove("redis-only", T0 - 5)  # expired: it would be in RAM if we had it
    assert "near" not in index and index.in_memory == 1  # "far", buffered
    assert [d.id for d in index.due(T0 + 10 * DAY)] == ["far"]


def test_prepare_reads_in_a_thread_and_keeps_what_comes_meanwhile(tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path, now=T0, flush_lines=10)
    items = [Due(f"p{i}", "c", "call", "", T0 + 2 * DAY + i) for i in range(50)]
    for due in items:
        index.add(due)

    async def scenario() -> list[str]:
        task = asyncio.create_task(index.prepare(T0 + 2 * DAY))
        await asyncio.sleep(0)  # the worker thread is reading the bucket now
        index.add(Due("late", "c", "call", "", T0 + 2 * DAY + 7.5))
        index.remove("p3")
        await task
        return [d.id for d in index.due(T0 + 3 * DAY)]

    got = asyncio.run(scenario())
    assert sorted(got) == sorted([d.id for d in items if d.id != "p3"] + ["late"])


# --- with a journal: rebuild, crash, restart ---------------------------------------------


def handle(i: int, created: float, days: int = 30) -> RecordingHandle:
    return RecordingHandle.create(call_id=f"call-{i}", number="+31900123456", owner="acme",
                                  path=f"/nonexistent/rec-{i}.wav", facts=FACTS,
                                  created=datetime.fromtimestamp(created, UTC),
                                  retention_days=days, id=f"rec{i}")


def deleted(i: int, at: float) -> dict[str, str]:
    return {"id": f"rec{i}", "call_id": f"call-{i}", "reason": "expired", "file": "missing",
            "at": "", "node": "n"}


def write(journal_dir: Path, events: list[tuple[float, str, dict[str, Any]]]) -> None:
    with Journal(journal_dir, rotate_daily=False) as journal:
        for at, type, data in sorted(events, key=lambda e: e[0]):
            journal.append([(type, data)], sync=False, at=datetime.fromtimestamp(at, UTC))


class Peak(RecordingIndex):
    peak = 0

    def apply(self, entry: Entry) -> None:
        super().apply(entry)
        Peak.peak = max(Peak.peak, self.in_memory)


def test_the_rebuild_streams_without_holding_every_recording(tmp_path: Path) -> None:
    rng = random.Random(5)
    created = sorted(T0 + rng.uniform(0, 60 * DAY) for _ in range(6_000))
    now = T0 + 60 * DAY
    events: list[tuple[float, str, dict[str, Any]]] = []
    expected = set()
    for i, at in enumerate(created):
        h = handle(i, at)
        events.append((at, "recording", h.to_fields()))
        if h.expires_unix <= now - HOUR:
            events.append((h.expires_unix + 30, "recording-deleted", deleted(i, at)))
        else:
            expected.add(h.id)
    write(tmp_path / "j", events)
    Peak.peak = 0
    index = Peak.from_journal(tmp_path / "j", tmp_path / "scratch", now=now, flush_lines=200)
    assert len(index) == len(expected) > 2_500
    # Replayed at each record's time: RAM held what was due within two hours, not all.
    assert Peak.peak <= 200 + 50
    came = []
    t = now
    while t < now + 31 * DAY:
        for d in index.due(t):
            came.append(d.id)
            index.remove(d.id, d.expires)
        t += HOUR * 7
    assert sorted(came) == sorted(expected)


def test_a_crash_between_journal_and_bucket_loses_nothing(tmp_path: Path) -> None:
    journal_dir, scratch = tmp_path / "j", tmp_path / "scratch"
    first = [handle(i, T0 + i * 60) for i in range(500)]
    write(journal_dir, [(T0 + i * 60, "recording", h.to_fields()) for i, h in enumerate(first)])
    index = RecordingIndex.from_journal(journal_dir, scratch, now=T0 + DAY)
    assert index.on_disk == 500
    # The server journals 100 more; it dies before they reach a bucket file (buffered).
    later = [handle(i, T0 + DAY + i) for i in range(500, 600)]
    write(journal_dir, [(T0 + DAY + i, "recording", h.to_fields()) for i, h in
                        zip(range(500, 600), later, strict=True)])
    for h in later[:50]:
        index.add(Due.of(h))
    assert index.on_disk == 500  # still in the buffer: lost with the process
    # A stale bucket from an older run names a recording that no longer exists.
    stale = index.bucket_path(index._slot(T0 + 31 * DAY))
    stale.write_text('["ghost","c","call","/nonexistent/ghost.wav",%r]\n' % (T0 + 31 * DAY))
    del index

    restarted = RecordingIndex.from_journal(journal_dir, scratch, now=T0 + DAY + HOUR)
    came: Counter[str] = Counter()
    t, expires = T0 + DAY + HOUR, {h.id: h.expires_unix for h in first + later}
    while t < T0 + 33 * DAY:
        for d in restarted.due(t):
            assert d.expires <= t
            came[d.id] += 1
            restarted.remove(d.id, d.expires)
        t += HOUR
    assert set(came) == set(expires) and max(came.values()) == 1


def test_restarts_sweep_everything_once_and_nothing_early(tmp_path: Path) -> None:
    journal_dir, scratch = tmp_path / "j", tmp_path / "scratch"
    clock = {"now": T0}

    def now() -> datetime:
        return datetime.fromtimestamp(clock["now"], UTC)

    journal = Journal(journal_dir, rotate_daily=False)

    async def append(type: str, data: dict[str, Any]) -> Position:
        return journal.append([(type, data)], sync=False, at=now())[0]

    def start() -> Sweeper:
        index = RecordingIndex.from_journal(journal_dir, scratch, now=clock["now"])
        return Sweeper(storage_dir=tmp_path, node="n", index=index, journal=append,
                       clock=now)

    rng = random.Random(11)
    made = {}
    sweeper = start()

    async def run() -> None:
        nonlocal sweeper
        n = 0
        while clock["now"] < T0 + 75 * DAY:
            if clock["now"] < T0 + 40 * DAY:
                for _ in range(15):  # recordings with 1 to 30 days' retention
                    h = handle(n, clock["now"], days=rng.randint(1, 30))
                    await append("recording", h.to_fields())
                    sweeper.index.add(Due.of(h))
                    made[h.id] = h.expires_unix
                    n += 1
            await sweeper.sweep()
            clock["now"] += 5 * HOUR
            if int((clock["now"] - T0) // (5 * HOUR)) % 37 == 0:
                sweeper.index.discard()  # the process dies; restart from the journal
                sweeper = start()
                await sweeper.sweep()

    asyncio.run(run())
    journal.close()
    deletions = [(e.data["id"], e.at) for e in read_entries(journal_dir,
                                                            types=("recording-deleted",))]
    counts = Counter(id for id, _ in deletions)
    assert set(counts) == set(made) and max(counts.values()) == 1
    for id, at in deletions:
        assert datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() >= made[id]
