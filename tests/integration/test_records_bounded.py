"""Bounded state against a real redis-server: stream caps, markers that do not grow, pruning.

The soak is benchmarks/records_soak.py scaled down (three simulated days
in seconds, small caps and keep age); the 24-hour run's figures are in
benchmarks/RESULTS.md. The other tests take the exactly-once guarantee
apart: a replay with no cursor at all, a record twice in the journal, a
journal restored from a backup behind what Redis has, caps below the safe
floor.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
import redis
import uvloop

from benchmarks.records_soak import Options, run_soak
from mediacore.records import RecordsService
from mediacore.records.journal import CURSOR, Journal, journal_dir
from mediacore.records.watermark import IDENTITY
from tests.integration.records_helpers import make_cdr, make_config

MiB = 1 << 20


def test_three_simulated_days_leave_disk_and_redis_flat(redis_url: str, tmp_path: Path) -> None:
    options = Options(hours=72, rate=0.2, step=600, record_every=5,
                      retention_hours=(6.0, 24.0), keep_days=0.5, cdr_maxlen=3000,
                      events_maxlen=500, window=4000, rotate_mb=1, publish_batch=100,
                      restart_at=(30.0, 50.0))
    out = uvloop.run(run_soak(tmp_path / "storage", redis_url, options))
    assert out.problems == []  # exactly once, newest CDRs in the stream, retention exact
    assert out.cdrs == 72 * 3600 // 5 and out.pruned_files >= 10
    # Steady state once the longest retention (24 h) and the keep age have passed.
    steady = [s for s in out.samples if s.hour >= 30]
    middle = [s for s in steady if s.hour < 51]
    late = [s for s in steady if s.hour >= 51]
    assert len(middle) >= 20 and len(late) >= 20
    written = out.pruned_bytes + out.samples[-1].journal_bytes
    for s in late:
        # Disk: the kept window (half a day, about a sixth of what was written)
        # plus the file being written and the one about to go.
        assert s.journal_bytes <= max(m.journal_bytes for m in middle) + 1 * MiB
        assert s.journal_bytes < written / 3
        assert s.journal_files <= max(m.journal_files for m in middle) + 1
        # Redis: capped streams, a window of at most 4,000 ids, keys = live recordings.
        assert s.cdr_stream <= 3000 + 100 and s.events_stream <= 1000 + 100
        assert s.window_ids <= 4000
        assert s.keys <= max(m.keys for m in middle) + 50
        assert s.used_memory <= max(m.used_memory for m in middle) * 1.1
    assert max(s.live_recordings for s in late) <= max(m.live_recordings for m in middle) + 50


def run_service(config, *, records: list, **kwargs) -> RecordsService:  # type: ignore[no-untyped-def]
    async def scenario() -> RecordsService:
        service = RecordsService(config, **kwargs)
        await service.start()
        await asyncio.gather(*(service.record_cdr(cdr) for cdr in records))
        assert await service.wait_published(30)
        await service.close()
        return service

    return uvloop.run(scenario())


def stream_ids(client: redis.Redis) -> list[str]:
    return [f[b"call_id"].decode() for _, f in client.xrange("mediacore:cdr", count=100_000)]


def test_a_replay_without_any_cursor_is_dropped_by_the_watermark(
        redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    config = make_config(tmp_path, redis_url)
    # A window of 10 ids: the window alone could not catch this replay.
    run_service(config, records=[make_cdr(i) for i in range(300)], marker_window=10)
    assert client.hlen("mediacore:seen:test-node") + client.hlen(
        "mediacore:seen:test-node:old") <= 10
    (journal_dir(tmp_path, "test-node") / CURSOR).unlink()
    again = run_service(config, records=[], marker_window=10)
    assert again.stats().replayed == 300 and again.stats().duplicates == 300
    assert again.stats().published == 0
    assert stream_ids(client) == [f"call-{i}" for i in range(300)]
    assert not client.keys("mediacore:cdr:published:*")  # no key per CDR any more


def test_a_record_twice_in_the_journal_is_published_once(redis_url: str, tmp_path: Path) -> None:
    """The writer's retry after a failed write can journal a record twice, far apart."""
    client = redis.Redis.from_url(redis_url)
    with Journal(journal_dir(tmp_path, "test-node")) as journal:
        journal.append([("cdr", make_cdr(1).to_fields())])
        journal.append([("cdr", make_cdr(i).to_fields()) for i in range(2, 400)])
        journal.append([("cdr", make_cdr(1).to_fields())])
    service = run_service(make_config(tmp_path, redis_url), records=[])
    assert service.stats().published == 399 and service.stats().duplicates == 1
    assert sorted(stream_ids(client)) == sorted(f"call-{i}" for i in range(1, 400))


def test_a_journal_restored_behind_redis_gets_a_new_identity_and_nothing_is_lost(
        redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_url)
    config = make_config(tmp_path, redis_url)
    directory = journal_dir(tmp_path, "test-node")
    run_service(config, records=[make_cdr(i) for i in range(10)])
    backup = tmp_path / "backup"
    shutil.copytree(directory, backup, ignore=shutil.ignore_patterns("*.lock"))
    run_service(config, records=[make_cdr(i) for i in range(10, 20)])
    identity = (directory / IDENTITY).read_text()
    # The operator restores the journal from before the second run (same identity).
    for path in directory.glob("journal-*.jsonl"):
        path.unlink()
    for path in backup.iterdir():
        if path.is_file():  # open-recordings/ (recording markers) is there already
            shutil.copy2(path, directory / path.name)
    with caplog.at_level(logging.WARNING, logger="mediacore.records"):
        # New calls land at positions the old watermark covers: they must not be dropped.
        run_service(config, records=[make_cdr(i) for i in range(20, 25)])
    assert "new identity" in caplog.text
    assert (directory / IDENTITY).read_text() != identity
    assert sorted(stream_ids(client)) == sorted(f"call-{i}" for i in range(25))


def test_caps_below_the_safe_floor_are_raised_with_a_warning(
        redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_url)
    document_config = make_config(tmp_path, redis_url)
    config = type(document_config)(**{**document_config.__dict__, "redis": type(
        document_config.redis)(url=redis_url, cdr_stream_maxlen=10, events_stream_maxlen=0)})
    with caplog.at_level(logging.WARNING, logger="mediacore.records"):
        run_service(config, records=[make_cdr(i) for i in range(700)], publish_batch=100)
    assert "cdr_stream_maxlen = 10 is below 200" in caplog.text
    # MAXLEN ~ 200: whole nodes of 100 entries go, at least 200 stay.
    assert 200 <= client.xlen("mediacore:cdr") <= 300
    assert stream_ids(client)[-1] == "call-699"
