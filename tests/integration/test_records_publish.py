"""Publication to a real redis-server: exactly once, through outages and restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import uvloop

from mediacore.config import parse_config
from mediacore.records import RecordingHandle, RecordsService, WavFacts
from mediacore.records.journal import (
    Journal,
    Position,
    journal_dir,
    read_entries,
    save_cursor,
)
from mediacore.records.timefmt import format_utc
from tests.integration.records_helpers import make_cdr, make_config, recent, until
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def persistent_redis(redis_server: RedisServer, redis_url: str) -> Iterator[redis.Redis]:
    """The session's Redis, set to save its data when stopped, so a restart keeps it.

    The fixture's server runs without persistence; a stop would otherwise
    wipe what was published before it and "exactly once" could not be
    checked. The dump file is removed afterwards so no later test loads it.
    """
    client = redis.Redis.from_url(redis_url)
    client.config_set("save", "3600 1")
    yield client
    redis_server.start()
    client.config_set("save", "")
    client.close()
    (redis_server.workdir / "dump.rdb").unlink(missing_ok=True)


def stream_ids(client: redis.Redis, key: str = "mediacore:cdr") -> list[str]:
    return [f[b"call_id"].decode() for _, f in client.xrange(key, count=1_000_000)]


def test_every_cdr_arrives_exactly_once_across_a_redis_outage(
    redis_server: RedisServer, persistent_redis: redis.Redis, redis_url: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    n = 600
    client = persistent_redis
    config = make_config(tmp_path, redis_url, retry_max_delay=0.5)
    caplog.set_level(logging.INFO, logger="mediacore.records")

    async def scenario() -> None:
        service = RecordsService(config, lag_log_interval=0.2)
        await service.start()
        for i in range(n):
            service.record_cdr(make_cdr(i))
            if i == n // 3:
                await until(lambda: client.xlen("mediacore:cdr") > 0, "publication under way")
                await asyncio.to_thread(redis_server.stop)
            elif i == 2 * n // 3:
                await until(lambda: not service.lag().redis_ok, "publication failing")
                lag = service.lag()
                assert lag.pending > 0 and lag.oldest_age >= 0
                await asyncio.to_thread(redis_server.start)
            if i % 10 == 0:
                await asyncio.sleep(0.002)  # calls end over time, not all at once
        await until(lambda: service.lag().pending == 0 and service.lag().redis_ok,
                    "the backlog to drain")
        assert await service.wait_published(30)
        stats = service.stats()
        assert stats.journaled == n and stats.publish_errors > 0
        await service.close()

    uvloop.run(scenario())
    ids = stream_ids(client)
    assert len(ids) == n == client.xlen("mediacore:cdr")
    assert sorted(ids) == sorted(f"call-{i}" for i in range(n))
    assert ids == [f"call-{i}" for i in range(n)]  # and in journal order
    # Markers: the node's window (one hash, TTL marker_ttl_days) and watermark,
    # not one key per CDR.
    assert client.hexists("mediacore:seen:test-node", "cdr:call-0")
    ttl = client.ttl("mediacore:seen:test-node")
    assert 29 * 86_400 < ttl <= 30 * 86_400
    assert client.get("mediacore:watermark:test-node") is not None
    # The lag is a state in the log, not a line per record.
    assert caplog.text.count("Redis publication is lagging") == 1
    assert caplog.text.count("Redis publication recovered") == 1


def test_a_restart_replays_only_what_redis_may_lack(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    config = make_config(tmp_path, redis_url)

    async def publish(first: int, count: int) -> RecordsService:
        service = RecordsService(config)
        await service.start()
        await asyncio.gather(*(service.record_cdr(make_cdr(i))
                               for i in range(first, first + count)))
        assert await service.wait_published(30)
        await service.close()
        return service

    async def scenario() -> None:
        await publish(0, 200)
        clean = await publish(200, 0)  # a clean restart re-sends nothing
        assert clean.stats().replayed == 0 and clean.stats().duplicates == 0
        # A crash after publishing but before the cursor was saved: the cursor
        # lags; those records are re-sent and Redis drops them.
        entries = list(read_entries(journal_dir(tmp_path, "test-node")))
        save_cursor(journal_dir(tmp_path, "test-node"), entries[149].position)
        again = await publish(200, 0)
        assert again.stats().replayed == 50
        assert again.stats().duplicates == 50 and again.stats().published == 0

    uvloop.run(scenario())
    assert client.xlen("mediacore:cdr") == 200


def test_duplicate_journal_lines_are_published_once(redis_url: str, tmp_path: Path) -> None:
    """A retried write can leave a record twice in the journal: Redis gets it once."""
    client = redis.Redis.from_url(redis_url)
    with Journal(journal_dir(tmp_path, "test-node")) as journal:
        journal.append([("cdr", make_cdr(1).to_fields())] * 3)
        journal.append([("cdr", {"call_id": "broken"})])  # malformed: reported, skipped
        journal.append([("cdr", make_cdr(2).to_fields())])

    async def scenario() -> RecordsService:
        service = RecordsService(make_config(tmp_path, redis_url))
        await service.start()
        assert await service.wait_published(30)
        await service.close()
        return service

    stats = uvloop.run(scenario()).stats()
    assert stream_ids(client) == ["call-1", "call-2"]
    assert (stats.published, stats.duplicates, stats.rejected) == (2, 2, 1)


def test_scripts_come_back_after_redis_forgets_them(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)

    async def scenario() -> None:
        service = RecordsService(make_config(tmp_path, redis_url))
        await service.start()
        await service.record_cdr(make_cdr(1))
        assert await service.wait_published(30)
        client.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
        await service.record_cdr(make_cdr(2))
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    assert stream_ids(client) == ["call-1", "call-2"]


def test_recording_handles_and_voicemail_deliveries_are_published(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    facts = WavFacts("wav", 8000, 2, Decimal("14.340"), 229_484, "cd" * 32)
    # Made now, not at BASE: a handle already past its retention would be
    # swept by the service's first sweep, racing the assertions.
    created = recent()
    recording = RecordingHandle.create(
        call_id="call-1", number="+31900123456", owner="acme",
        path=tmp_path / "recordings" / "r1.wav", facts=facts, created=created,
        retention_days=30, id="r1")
    voicemail = RecordingHandle.voicemail(
        call_id="call-2", number="+31900123456", owner="acme",
        facts=WavFacts("wav", 8000, 1, Decimal("9.000"), 144_044, "ef" * 32),
        created=created, delivered=created + timedelta(seconds=20), retention_days=7,
        id="v1")

    async def scenario() -> None:
        service = RecordsService(make_config(tmp_path, redis_url))
        await service.start()
        await service.record_cdr(make_cdr(1, recording="r1"))
        await service.record_recording(recording)
        await service.record_voicemail_delivery(voicemail)
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    stored = client.hgetall("mediacore:recording:r1")
    assert stored == {**recording.to_fields(), "node": "test-node"}
    assert stored["expires"] == format_utc(created + timedelta(days=30))
    assert client.zscore("mediacore:recordings:expiry", "r1") == recording.expires_unix
    assert client.hget("mediacore:recording:v1", "kind") == "voicemail"
    assert client.hget("mediacore:recording:v1", "path") == ""
    assert client.hget("mediacore:recording:v1", "delivered") == format_utc(
        created + timedelta(seconds=20))
    assert client.xrange("mediacore:cdr")[0][1]["recording"] == "r1"


def test_a_custom_prefix_names_every_key(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)

    async def scenario() -> None:
        service = RecordsService(make_config(tmp_path, redis_url, prefix="tenant7"))
        await service.start()
        await service.record_cdr(make_cdr(1))
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    assert sorted(client.keys("*")) == [b"tenant7:cdr", b"tenant7:seen:test-node",
                                         b"tenant7:watermark:test-node"]


def test_without_redis_the_journal_is_the_store(tmp_path: Path) -> None:
    async def scenario() -> RecordsService:
        service = RecordsService(make_config(tmp_path))
        await service.start()
        await asyncio.gather(*(service.record_cdr(make_cdr(i)) for i in range(20)))
        assert not service.lag().enabled and service.lag().pending == 0
        await service.close()
        return service

    service = uvloop.run(scenario())
    assert service.stats().journaled == 20
    assert len(list(read_entries(journal_dir(tmp_path, "test-node")))) == 20
    assert not (journal_dir(tmp_path, "test-node") / "cursor.json").exists()


def test_a_record_after_close_still_reaches_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        service = RecordsService(make_config(tmp_path))
        await service.start()
        await service.close()
        await service.record_cdr(make_cdr("late"))

    uvloop.run(scenario())
    assert [e.data["call_id"]
            for e in read_entries(journal_dir(tmp_path, "test-node"))] == ["call-late"]
    assert "writing it to the journal synchronously" in caplog.text


def _consumer_snippet() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "records.md").read_text()
    after = text.split("<!-- consumer", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_billing_consumer_runs(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        service = RecordsService(make_config(tmp_path, redis_url))
        await service.start()
        await asyncio.gather(*(service.record_cdr(make_cdr(i)) for i in range(3)))
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    namespace: dict[str, object] = {"__name__": "billing_consumer"}
    exec(compile(_consumer_snippet(), "docs/records.md", "exec"), namespace)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xgroup_create("mediacore:cdr", "billing", id="0")
    # A consumer that died after reading one entry, before acknowledging it:
    client.xreadgroup("billing", "billing-1", {"mediacore:cdr": ">"}, count=1)
    namespace["run"](client, block_ms=50, forever=False)  # type: ignore[operator]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["call-0", "call-1", "call-2"]
    assert lines[0] == "call-0 acme +31900123456 12.340s answered"
    assert client.xpending("mediacore:cdr", "billing")["pending"] == 0


def test_a_cursor_past_the_journals_end_means_replay_all(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal restored from a backup (or cut) must not be skipped by an old cursor."""
    client = redis.Redis.from_url(redis_url)
    with Journal(journal_dir(tmp_path, "test-node")) as journal:
        journal.append([("cdr", make_cdr(1).to_fields())])
    save_cursor(journal_dir(tmp_path, "test-node"), Position(7, 100))

    async def scenario() -> None:
        service = RecordsService(make_config(tmp_path, redis_url))
        await service.start()
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    assert stream_ids(client) == ["call-1"]
    assert "past the end of the journal" in caplog.text


def test_the_voicemail_senders_report_is_recorded_as_it_is(
    redis_url: str, tmp_path: Path
) -> None:
    """``record_voicemail_delivery`` can be the voicemail sender's ``on_delivered``."""
    from mediacore.calls.voicemail import DeliveryReport

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    config = parse_config({"storage": {"dir": str(tmp_path)}, "redis": {"url": redis_url},
                           "records": {"node": "n1"},
                           "number": [{"number": "+31900123456", "owner": "acme",
                                       "targets": [], "voicemail_email": "o@example.com",
                                       "retention_days": 7}]}, "vm.toml")
    accepted = recent()  # not at BASE: its 7 days would be over, and swept at start
    report = DeliveryReport(message_id="<m1@example.net>", recipient="o@example.com",
                            accepted_at=accepted, bytes=48_044, owner="acme",
                            number="+31900123456", call_id="call-9")

    async def scenario() -> None:
        service = RecordsService(config)
        await service.start()
        await service.record_voicemail_delivery(report)
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    (key,) = client.keys("mediacore:recording:*")
    stored = client.hgetall(key)
    assert (stored["kind"], stored["path"], stored["call_id"]) == ("voicemail", "", "call-9")
    assert (stored["delivered"], stored["bytes"], stored["node"]) == (
        format_utc(accepted), "48044", "n1")
    assert stored["expires"] == format_utc(accepted + timedelta(days=7))  # the number's 7
