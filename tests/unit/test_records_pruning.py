"""Journal pruning: which files may go, and retention that stays exact when they do.

The decision is a pure function (``plan_prune``) tested case by case. The
carry-forward is tested against the truth: the live recordings that a
replay of the *whole* journal finds, before anything was pruned, must be
exactly the ones found after pruning, after a crash between the steps, and
after several prunes in a row (which compact ``carried.jsonl``).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mediacore.records.carried import CARRIED, carried_through, read_carried, read_handles
from mediacore.records.cdr import Cdr
from mediacore.records.history import export_owner, iter_cdrs
from mediacore.records.journal import Journal, Position, journal_files, save_cursor
from mediacore.records.pruning import (
    FileFacts,
    Pruner,
    carry_forward,
    file_facts,
    plan_prune,
    prune,
    remove_files,
)
from mediacore.records.recordings import RecordingDeleted, RecordingHandle, WavFacts
from mediacore.records.retention import RecordingIndex
from mediacore.records.watermark import IDENTITY, load_identity
from tests.integration.records_helpers import make_cdr

DAY = 86_400.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FACTS = WavFacts("wav", 8000, 2, Decimal("1.000"), 44, "0" * 64)


def facts(seq: int, last_day: float, size: int = 100) -> FileFacts:
    return FileFacts(seq, Path(f"journal-{seq:06d}-20260101.jsonl"), size,
                     T0.timestamp() + last_day * DAY)


NOW = T0.timestamp() + 40 * DAY
FILES = [facts(1, 1), facts(2, 2), facts(3, 20), facts(4, 39.5)]


def test_nothing_goes_with_keep_zero_or_when_only_the_current_file_exists() -> None:
    assert plan_prune(FILES, now=NOW, keep_seconds=0, cursor=Position(9, 0),
                      require_published=True).remove == ()
    only = plan_prune(FILES[-1:], now=NOW + 999 * DAY, keep_seconds=DAY,
                      cursor=Position(9, 0), require_published=True)
    assert only.remove == () and "being written" in only.kept


def test_old_published_files_go_oldest_first_and_the_rest_stay() -> None:
    plan = plan_prune(FILES, now=NOW, keep_seconds=30 * DAY, cursor=Position(4, 0),
                      require_published=True)
    assert [f.seq for f in plan.remove] == [1, 2] and plan.through == 2
    assert "younger than 30 days" in plan.kept


def test_a_file_not_all_published_stops_pruning_whatever_its_age() -> None:
    plan = plan_prune(FILES, now=NOW + 100 * DAY, keep_seconds=DAY, cursor=Position(2, 50),
                      require_published=True)
    assert [f.seq for f in plan.remove] == [1]
    assert "not all in Redis" in plan.kept
    assert plan_prune(FILES, now=NOW, keep_seconds=DAY, cursor=None,
                      require_published=True).remove == ()


def test_a_cursor_at_the_very_end_of_a_file_counts_as_past_it() -> None:
    plan = plan_prune(FILES, now=NOW, keep_seconds=30 * DAY, cursor=Position(2, 100),
                      require_published=True)
    assert [f.seq for f in plan.remove] == [1, 2]


def test_without_redis_age_alone_decides_and_max_files_bounds_one_prune() -> None:
    plan = plan_prune(FILES, now=NOW + 100 * DAY, keep_seconds=DAY, cursor=None,
                      require_published=False, max_files=2)
    assert [f.seq for f in plan.remove] == [1, 2] and "at most 2" in plan.kept


def test_the_pruner_is_off_without_redis_unless_the_operator_says_so(tmp_path: Path) -> None:
    off = Pruner(tmp_path, keep_days=30, redis=False, without_redis=False)
    assert not off.enabled and "only copy of the CDRs" in off.describe()
    assert Pruner(tmp_path, keep_days=30, redis=False, without_redis=True).enabled
    assert not Pruner(tmp_path, keep_days=0, redis=True, without_redis=False).enabled


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def handle(n: int, created: datetime, retention_days: float) -> RecordingHandle:
    made = RecordingHandle.create(call_id=f"call-{n}", number="+31900123456", owner="acme",
                                  path=f"/var/rec/r{n}.wav", facts=FACTS, created=created,
                                  retention_days=0, id=f"r{n:05d}", node="n1")
    return replace(made, expires=made.created + timedelta(days=retention_days))


def write_journal(directory: Path, days: int,
                  per_day: int = 12) -> tuple[list[RecordingHandle], dict[str, datetime]]:
    """One file per simulated day: CDRs, handles, and the deletions a sweeper would make.

    Retention alternates between 1.5 days (shorter than the keep age the
    tests use) and 9 days (longer), so some handles must be carried.
    Returns the handles and when each deleted one was deleted.
    """
    clock = Clock(T0)
    handles: list[RecordingHandle] = []
    deleted: dict[str, datetime] = {}
    with Journal(directory, clock=clock) as journal:
        for day in range(days):
            for i in range(per_day):
                clock.now = now = T0 + timedelta(days=day, hours=24 * i / per_day)
                for old in handles:  # the sweeper, once per record time
                    if old.expires <= now and old.id not in deleted:
                        gone = RecordingDeleted(id=old.id, call_id=old.call_id,
                                                reason="expired", file="deleted", at=now,
                                                node="n1")
                        journal.append([("recording-deleted", gone.to_fields())], at=now)
                        deleted[old.id] = now
                n = day * per_day + i
                made = handle(n, now, 1.5 if n % 2 else 9.0)
                handles.append(made)
                journal.append([("cdr", make_cdr(n, start=now).to_fields()),
                                ("recording", made.to_fields())], at=now)
    return handles, deleted


def live(directory: Path, now: datetime) -> set[str]:
    index = RecordingIndex.from_journal(directory, None, now=now.timestamp())
    return {due.id for due in index.live()}


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "journal" / "n1"
    write_journal(directory, days=12)
    return directory


END = T0 + timedelta(days=12)


def test_pruning_keeps_exactly_the_live_recordings_a_full_replay_finds(
        journal_dir: Path) -> None:
    truth = live(journal_dir, END)
    assert truth and len(journal_files(journal_dir)) == 12
    plan, result = prune(journal_dir, now=END.timestamp(), keep_seconds=3 * DAY,
                         require_published=False)
    assert [f.seq for f in plan.remove] == list(range(1, 9))
    assert len(result.removed) == 8 and result.bytes > 0
    assert [seq for seq, _ in journal_files(journal_dir)] == [9, 10, 11, 12]
    assert carried_through(journal_dir) == 8
    carried = {e.data["id"] for e in read_carried(journal_dir)}
    assert carried and result.carried == len(carried)
    assert live(journal_dir, END) == truth
    # The first day's 9-day recordings outlive its file; its 1.5-day ones were
    # deleted within the pruned files and are not carried.
    assert "r00000" in carried and "r00001" not in carried


def test_repeated_prunes_compact_the_carried_file(tmp_path: Path) -> None:
    directory = tmp_path / "journal" / "n1"
    handles, deleted = write_journal(directory, days=12)
    truth = live(directory, END)
    for through_day in (3, 5, 7, 9):
        now = T0 + timedelta(days=through_day + 3)
        plan, _ = prune(directory, now=now.timestamp(), keep_seconds=3 * DAY,
                        require_published=False)
        last = datetime.fromtimestamp(plan.remove[-1].last_at, UTC)
        # Exactly the handles of the pruned files not deleted in them: those deleted
        # since left carried.jsonl at this prune rather than piling up in it.
        expected = {h.id for h in handles
                    if h.created <= last and (h.id not in deleted or deleted[h.id] > last)}
        assert {e.data["id"] for e in read_carried(directory)} == expected
        assert live(directory, END) == truth
    assert any(h.id in deleted and h.created <= last for h in handles)


def test_a_crash_after_the_carried_file_before_the_unlinks_loses_and_repeats_nothing(
        journal_dir: Path) -> None:
    truth = live(journal_dir, END)
    plan_files = file_facts(journal_dir)[:6]
    carry_forward(journal_dir, 6)  # steps 1-2 done, then the "crash": no unlink
    assert live(journal_dir, END) == truth  # files 1-6 still there, skipped by handle readers
    handles = [e.data["id"] for e in read_handles(journal_dir, ("recording",))]
    assert len(handles) == len(set(handles)), "a handle read twice"
    assert carry_forward(journal_dir, 6) == -1  # the next prune sees it is covered
    remove_files(journal_dir, plan_files[:3])  # a crash halfway through the unlinks
    assert live(journal_dir, END) == truth
    prune(journal_dir, now=END.timestamp(), keep_seconds=3 * DAY, require_published=False)
    assert live(journal_dir, END) == truth


def test_a_crash_while_writing_the_carried_file_leaves_the_old_one(journal_dir: Path) -> None:
    truth = live(journal_dir, END)
    prune(journal_dir, now=(T0 + timedelta(days=6)).timestamp(), keep_seconds=3 * DAY,
          require_published=False)
    before = (journal_dir / CARRIED).read_bytes()
    (journal_dir / (CARRIED + ".tmp")).write_bytes(b'{"type":"carried","v":1,"through":99}\n'
                                                   b'{"type":"recording","v":1,"at')
    assert (journal_dir / CARRIED).read_bytes() == before
    assert live(journal_dir, END) == truth
    prune(journal_dir, now=END.timestamp(), keep_seconds=3 * DAY, require_published=False)
    assert not (journal_dir / (CARRIED + ".tmp")).exists()
    assert live(journal_dir, END) == truth


def test_published_only_files_go_and_only_up_to_the_cursor(journal_dir: Path) -> None:
    files = journal_files(journal_dir)
    save_cursor(journal_dir, Position(files[4][0], 0))  # files 1-4 published
    plan, _ = prune(journal_dir, now=END.timestamp(), keep_seconds=3 * DAY,
                    require_published=True)
    assert [f.seq for f in plan.remove] == [1, 2, 3, 4]
    assert journal_files(journal_dir)[0][0] == 5


def test_a_reader_of_handles_holds_pruning_off(journal_dir: Path) -> None:
    reading = read_handles(journal_dir)
    next(reading)
    _, result = prune(journal_dir, now=END.timestamp(), keep_seconds=3 * DAY,
                      require_published=False)
    assert result.busy and not result.removed
    reading.close()
    _, result = prune(journal_dir, now=END.timestamp(), keep_seconds=3 * DAY,
                      require_published=False)
    assert result.removed


def test_export_still_lists_and_cdr_list_covers_the_kept_window(
        journal_dir: Path, tmp_path: Path) -> None:
    prune(journal_dir, now=END.timestamp(), keep_seconds=3 * DAY, require_published=False)
    kept_cdrs = list(iter_cdrs(journal_dir))
    assert kept_cdrs and all(isinstance(c, Cdr) for c in kept_cdrs)
    assert min(c.start for c in kept_cdrs) >= T0 + timedelta(days=8)
    report = export_owner(journal_dir, "acme", tmp_path / "out", now=END)
    rows = json.loads((tmp_path / "out" / "recordings.json").read_text())
    listed = {row["id"] for row in rows}
    assert live(journal_dir, END) <= listed  # every recording still kept is in the export
    assert report.recordings == len(rows)


def test_the_age_of_a_file_is_its_last_record_or_its_day(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    write_journal(directory, days=2, per_day=2)
    found = file_facts(directory)
    assert found[0].last_at == (T0 + timedelta(hours=12)).timestamp()
    with open(found[1].path, "ab") as file:
        file.write(b'{"type":"cdr","v":1,"at":"2026-0')  # a torn last line
    assert file_facts(directory)[1].last_at == (T0 + timedelta(days=1, hours=12)).timestamp()
    empty = directory / "journal-000003-20260105.jsonl"
    empty.touch()
    assert file_facts(directory)[2].last_at == datetime(2026, 1, 6, tzinfo=UTC).timestamp()


def test_a_garbled_carried_header_is_ignored_not_trusted(journal_dir: Path) -> None:
    truth = live(journal_dir, END)
    (journal_dir / CARRIED).write_text('{"type":"carried","through":"lots"}\n')
    assert carried_through(journal_dir) == 0
    assert live(journal_dir, END) == truth


def test_the_journal_identity_is_made_once_and_kept(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    assert len(first) == 32 and load_identity(tmp_path) == first
    (tmp_path / IDENTITY).write_text("not an id\n")
    renewed = load_identity(tmp_path)
    assert renewed != first and len(renewed) == 32
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
