"""The journal: order, rotation, torn tails, the cursor and the fsync policies."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvloop

from mediacore.records.journal import (
    Journal,
    JournalReader,
    Position,
    count_entries,
    journal_files,
    load_cursor,
    read_entries,
    save_cursor,
)
from mediacore.records.writer import FsyncPolicy, JournalWriter
from tests.integration.records_helpers import make_cdr, until


def cdr_records(first: int, count: int) -> list[tuple[str, dict[str, str]]]:
    return [("cdr", make_cdr(i).to_fields()) for i in range(first, first + count)]


def call_ids(directory: Path, start: Position | None = None) -> list[str]:
    return [e.data["call_id"] for e in read_entries(directory, start)]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_records_come_back_in_order_with_increasing_positions(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        first = journal.append(cdr_records(0, 3))
        second = journal.append(cdr_records(3, 2), sync=False)
    assert first + second == sorted(first + second)
    entries = list(read_entries(tmp_path))
    assert [e.data["call_id"] for e in entries] == [f"call-{i}" for i in range(5)]
    assert [e.position for e in entries] == first + second
    assert all(e.type == "cdr" for e in entries)
    line = journal_files(tmp_path)[0][1].read_text().splitlines()[0]
    assert line.startswith('{"type":"cdr","v":1,"at":"')  # the prefix readers filter on
    assert json.loads(line)["data"] == make_cdr(0).to_fields()


def test_rotation_by_size_keeps_every_record_in_order(tmp_path: Path) -> None:
    with Journal(tmp_path, rotate_bytes=2000) as journal:
        for i in range(40):
            journal.append(cdr_records(i, 1), sync=False)
    files = journal_files(tmp_path)
    assert len(files) > 5
    assert all(path.stat().st_size <= 2000 for _, path in files)
    assert [seq for seq, _ in files] == list(range(1, len(files) + 1))
    assert call_ids(tmp_path) == [f"call-{i}" for i in range(40)]


def test_rotation_per_utc_day(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC))
    with Journal(tmp_path, clock=clock) as journal:
        journal.append(cdr_records(0, 1))
        clock.now += timedelta(seconds=2)
        journal.append(cdr_records(1, 1))
    names = [path.name for _, path in journal_files(tmp_path)]
    assert names == ["journal-000001-20261123.jsonl", "journal-000002-20261124.jsonl"]
    assert call_ids(tmp_path) == ["call-0", "call-1"]


def test_a_torn_tail_is_skipped_and_sealed_never_losing_what_came_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal(tmp_path) as journal:
        journal.append(cdr_records(0, 3))
    path = journal_files(tmp_path)[0][1]
    whole = path.read_bytes()
    torn = json.dumps({"type": "cdr", "v": 1, "data": make_cdr(3).to_fields()}).encode()
    with open(path, "ab") as handle:
        handle.write(torn[: len(torn) // 2])  # the crash: half a line, no newline
    caplog.set_level(logging.WARNING)
    assert call_ids(tmp_path) == ["call-0", "call-1", "call-2"]

    with Journal(tmp_path) as journal:  # a restarted writer seals the torn line
        assert "last line is torn" in caplog.text
        journal.append(cdr_records(4, 1))
    assert path.read_bytes().startswith(whole)  # append-only: nothing was cut
    caplog.clear()
    assert call_ids(tmp_path) == ["call-0", "call-1", "call-2", "call-4"]
    assert "skipping a line that is not valid JSON" in caplog.text


def test_a_torn_tail_in_an_older_file_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal(tmp_path) as journal:
        journal.append(cdr_records(0, 1))
    with open(journal_files(tmp_path)[0][1], "ab") as handle:
        handle.write(b'{"type":"cdr","v":1,"da')
    (tmp_path / "journal-000002-20261124.jsonl").write_bytes(
        (json.dumps({"type": "cdr", "v": 1, "at": "", "data": make_cdr(1).to_fields()},
                    separators=(",", ":")) + "\n").encode())
    caplog.set_level(logging.WARNING)
    assert call_ids(tmp_path) == ["call-0", "call-1"]
    assert "skipping a torn last line" in caplog.text


def test_an_incomplete_last_line_is_waited_for_not_skipped(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.append(cdr_records(0, 1))
    path = journal_files(tmp_path)[0][1]
    line = json.dumps({"type": "cdr", "v": 1, "at": "", "data": make_cdr(1).to_fields()},
                      separators=(",", ":")).encode() + b"\n"
    reader = JournalReader(tmp_path)
    with open(path, "ab") as handle:
        handle.write(line[:40])
        handle.flush()
        assert [e.data["call_id"] for e in reader.read()] == ["call-0"]
        handle.write(line[40:])  # the writer finishes its line
        handle.flush()
        assert [e.data["call_id"] for e in reader.read()] == ["call-1"]
    reader.close()


def test_garbage_lines_in_the_middle_cost_only_themselves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal(tmp_path) as journal:
        journal.append(cdr_records(0, 1))
        journal.append_lines([b"\x00\x00\x00\n", b'["not", "a record"]\n'])
        journal.append(cdr_records(1, 1))
    caplog.set_level(logging.WARNING)
    assert call_ids(tmp_path) == ["call-0", "call-1"]
    assert caplog.text.count("skipping a line") == 2


def test_reading_resumes_at_a_position_and_stops_at_a_bound(tmp_path: Path) -> None:
    with Journal(tmp_path, rotate_bytes=1500) as journal:
        positions = journal.append(cdr_records(0, 10), sync=False)
        positions += [journal.append(cdr_records(i, 1), sync=False)[0] for i in range(10, 20)]
    assert call_ids(tmp_path, positions[14]) == [f"call-{i}" for i in range(15, 20)]
    reader = JournalReader(tmp_path, positions[4])
    assert [e.data["call_id"] for e in reader.read(100, up_to=positions[12])] == [
        f"call-{i}" for i in range(5, 13)]
    assert reader.position == positions[12]
    assert [e.data["call_id"] for e in reader.read(3)] == ["call-13", "call-14", "call-15"]
    reader.close()
    assert count_entries(tmp_path, positions[9], positions[-1], ("cdr",))[0] == 10
    assert count_entries(tmp_path, positions[9], positions[-1], ("recording",))[0] == 0


def test_type_filter_skips_lines_without_decoding_them(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.append(cdr_records(0, 2))
        journal.append([("recording-deleted", {"id": "r1", "at": "2026-11-23T00:00:00.000Z"})])
    found = list(read_entries(tmp_path, types=("recording-deleted",)))
    assert [(e.type, e.data["id"]) for e in found] == [("recording-deleted", "r1")]


def test_cursor_round_trip_and_unreadable_cursor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert load_cursor(tmp_path) is None
    with Journal(tmp_path) as journal:
        position = journal.append(cdr_records(0, 1))[0]
    save_cursor(tmp_path, position)
    assert load_cursor(tmp_path) == position
    saved = json.loads((tmp_path / "cursor.json").read_text())
    assert saved["file"] == journal_files(tmp_path)[0][1].name
    (tmp_path / "cursor.json").write_text("{half")
    assert load_cursor(tmp_path) is None
    assert "replaying the whole journal" in caplog.text


def test_two_writers_share_a_journal_without_losing_lines(tmp_path: Path) -> None:
    """The server and `mediacore retention sweep` may append at the same time."""
    with Journal(tmp_path, rotate_bytes=3000) as server, \
            Journal(tmp_path, rotate_bytes=3000) as sweeper:
        for i in range(30):
            (server if i % 3 else sweeper).append(cdr_records(i, 1), sync=False)
    assert call_ids(tmp_path) == [f"call-{i}" for i in range(30)]
    assert len(journal_files(tmp_path)) > 3


# --- the writer thread and the fsync policies -------------------------------------


def run(coro_fn) -> None:  # type: ignore[no-untyped-def]
    uvloop.run(coro_fn())


def test_record_policy_resolves_each_record_after_its_fsync(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path)
        writer = JournalWriter(journal, FsyncPolicy("record"))
        futures = [writer.submit("cdr", make_cdr(i).to_fields(), datetime.now(UTC))
                   for i in range(50)]
        first = await futures[0]
        assert journal.syncs >= 1
        positions = await asyncio.gather(*futures)
        assert positions[0] == first and positions == sorted(positions)
        # Group commit: records queued during one fsync share the next one.
        assert 1 <= journal.syncs <= 50
        await writer.close()
        journal.close()

    run(scenario)
    assert len(call_ids(tmp_path)) == 50


def test_batch_policy_fsyncs_every_n_records(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path)
        writer = JournalWriter(journal, FsyncPolicy("batch", batch_records=10,
                                                    batch_ms=3_600_000))
        now = datetime.now(UTC)
        first = [writer.submit("cdr", make_cdr(i).to_fields(), now) for i in range(5)]
        # Written (the page cache has them) but not yet fsynced, so not acknowledged.
        await until(lambda: len(call_ids(tmp_path)) == 5, "five records written")
        assert journal.syncs == 0 and not any(f.done() for f in first)
        rest = [writer.submit("cdr", make_cdr(i).to_fields(), now) for i in range(5, 10)]
        await asyncio.gather(*first, *rest)
        assert journal.syncs == 1
        await writer.close()
        journal.close()

    run(scenario)


def test_batch_policy_fsyncs_after_t_milliseconds(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path)
        writer = JournalWriter(journal, FsyncPolicy("batch", batch_records=1000, batch_ms=50))
        await asyncio.wait_for(writer.submit("cdr", make_cdr(1).to_fields(),
                                             datetime.now(UTC)), 30)
        assert journal.syncs == 1
        await writer.close()
        journal.close()

    run(scenario)


def test_close_flushes_a_pending_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path)
        writer = JournalWriter(journal, FsyncPolicy("batch", batch_records=1000,
                                                    batch_ms=3_600_000))
        futures = [writer.submit("cdr", make_cdr(i).to_fields(), datetime.now(UTC))
                   for i in range(3)]
        await writer.close()
        assert all(f.done() and f.exception() is None for f in futures)
        assert journal.syncs == 1
        journal.close()

    run(scenario)
    assert len(call_ids(tmp_path)) == 3


def test_a_failed_write_is_retried_in_a_fresh_file(tmp_path: Path) -> None:
    """A write that fails (a full disk: /dev/full in place of the file) is not dropped."""

    async def scenario() -> None:
        journal = Journal(tmp_path)
        writer = JournalWriter(journal, FsyncPolicy("record"))
        await writer.submit("cdr", make_cdr(0).to_fields(), datetime.now(UTC))
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, journal._fd)  # the next write fails with ENOSPC
        os.close(full)
        position = await asyncio.wait_for(
            writer.submit("cdr", make_cdr(1).to_fields(), datetime.now(UTC)), 30)
        assert position.seq == 2 and writer.errors >= 1
        await writer.close()
        journal.close()

    run(scenario)
    assert call_ids(tmp_path) == ["call-0", "call-1"]
