"""Retention: expired recordings are destroyed, file, keys and all, with one event.

Against the real redis-server, through the service's sweeper and through
the real ``mediacore retention sweep`` command, with and without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import uvloop

from mediacore.records import RecordingHandle, RecordsService, describe_wav
from mediacore.records.journal import journal_dir, read_entries
from mediacore.records.timefmt import utc_now
from tests.integration.records_helpers import config_toml, make_config, until, write_wav
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OLD = 40  # days ago: past a 30-day retention


def handle(storage: Path, id: str, *, days_ago: float = OLD, retention: int = 30,
           file: bool = True, call_id: str | None = None) -> RecordingHandle:
    """A call recording made ``days_ago`` with ``retention`` days, its WAV on disk or not."""
    path = storage / "recordings" / f"{id}.wav"
    wav = write_wav(path, seconds=0.2)
    facts = describe_wav(wav)
    if not file:
        path.unlink()
    return RecordingHandle.create(call_id=call_id or f"call-{id}", number="+31900123456",
                                  owner="acme", path=path, facts=facts,
                                  created=utc_now() - timedelta(days=days_ago),
                                  retention_days=retention, id=id)


def events(client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in client.xrange("mediacore:recording-events")]


def deletions(storage: Path) -> list[str]:
    return [e.data["id"] for e in read_entries(journal_dir(storage, "test-node"),
                                               types=("recording-deleted",))]


@pytest.fixture
def persistent_redis(redis_server: RedisServer, redis_url: str) -> Iterator[redis.Redis]:
    """Redis that keeps its data over a stop/start (see test_records_publish.py)."""
    client = redis.Redis.from_url(redis_url)
    client.config_set("save", "3600 1")
    yield client
    redis_server.start()
    client.config_set("save", "")
    client.close()
    (redis_server.workdir / "dump.rdb").unlink(missing_ok=True)


def test_expired_recordings_go_with_their_keys_and_one_event(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_url)
    storage = tmp_path / "var"
    old = [handle(storage, "old1"), handle(storage, "old2")]
    gone = handle(storage, "gone", file=False)  # deleted by someone else already
    young = handle(storage, "young", days_ago=1)
    vm = RecordingHandle.voicemail(call_id="call-vm", number="+31900123456", owner="acme",
                                   facts=describe_wav(write_wav(tmp_path / "vm.wav")),
                                   created=utc_now() - timedelta(days=OLD),
                                   delivered=utc_now() - timedelta(days=OLD), retention_days=30,
                                   id="vm")
    caplog.set_level(logging.INFO, logger="mediacore.records")

    async def scenario() -> None:
        service = RecordsService(make_config(storage, redis_url, sweep_interval=3600))
        await service.start()
        await until(lambda: service.stats().sweeps == 1, "the start-up sweep")
        for h in [*old, gone, young]:
            service.record_recording(h)
        await service.record_voicemail_delivery(vm)
        assert await service.wait_published(30)
        assert client.zcard("mediacore:recordings:expiry") == 5
        report = await service.sweep()
        assert sorted((d.id, d.file) for d in report.deleted) == [
            ("gone", "missing"), ("old1", "deleted"), ("old2", "deleted"), ("vm", "none")]
        assert report.ok
        assert await service.wait_published(30)
        again = await service.sweep()  # nothing left to do, nothing sent twice
        assert again.deleted == [] and again.ok
        assert service.stats().recordings_deleted == 4
        await service.close()

    uvloop.run(scenario())
    for h in old:
        assert not Path(h.path).exists()
    assert Path(young.path).exists()
    for id in ("old1", "old2", "gone", "vm"):
        assert not client.exists(f"mediacore:recording:{id}")
        assert client.zscore("mediacore:recordings:expiry", id) is None
    assert client.exists("mediacore:recording:young")
    assert client.zscore("mediacore:recordings:expiry", "young") == young.expires_unix
    found = events(client)
    assert sorted(e["id"] for e in found) == ["gone", "old1", "old2", "vm"]
    assert all(e["event"] == "deleted" and e["reason"] == "expired" for e in found)
    assert {e["id"]: e["call_id"] for e in found}["old1"] == "call-old1"
    assert "recording old1 of call call-old1 deleted" in caplog.text
    assert sorted(deletions(storage)) == ["gone", "old1", "old2", "vm"]


def test_without_redis_the_journal_drives_the_sweep(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    old, young = handle(storage, "old"), handle(storage, "young", days_ago=0)
    gone = handle(storage, "gone", file=False)

    async def record() -> None:
        service = RecordsService(make_config(storage, sweep_interval=3600))
        await service.start()
        for h in (old, young, gone):
            await service.record_recording(h)
        await service.close()

    async def restart_and_sweep() -> None:
        # A new process knows the recordings from the journal alone.
        service = RecordsService(make_config(storage, sweep_interval=3600))
        await service.start()
        await service.sweep()  # the start-up sweep may already have done it
        await service.close()

    uvloop.run(record())
    uvloop.run(restart_and_sweep())
    assert not Path(old.path).exists() and Path(young.path).exists()
    assert sorted(deletions(storage)) == ["gone", "old"]


def test_the_command_sweeps_and_is_idempotent(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    storage = tmp_path / "var"
    config = tmp_path / "m.toml"
    config.write_text(config_toml(storage, redis_url))
    old, young = handle(storage, "old"), handle(storage, "young", days_ago=2)

    async def record() -> None:
        service = RecordsService(make_config(storage, redis_url, sweep_interval=3600))
        await service.start()
        # Recorded after the start-up sweep: only the command will sweep them.
        await until(lambda: service.stats().sweeps == 1, "the start-up sweep")
        for h in (old, young):
            await service.record_recording(h)
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(record())

    def sweep() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mediacore", "retention", "sweep", "-c",
                               str(config)], capture_output=True, text=True, timeout=60,
                              cwd=REPO, check=False)

    first = sweep()
    assert first.returncode == 0, first.stderr
    assert "1 recordings deleted" in first.stdout
    assert not Path(old.path).exists() and Path(young.path).exists()
    assert not client.exists("mediacore:recording:old")
    assert client.exists("mediacore:recording:young")
    second = sweep()
    assert second.returncode == 0 and "0 recordings deleted" in second.stdout
    assert [e["id"] for e in events(client)] == ["old"]


def test_a_recording_that_cannot_be_deleted_is_reported_and_retried(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The path is a non-empty directory: unlink fails as it would on a bad disk."""
    client = redis.Redis.from_url(redis_url)
    storage = tmp_path / "var"
    stuck = handle(storage, "stuck")
    Path(stuck.path).unlink()
    Path(stuck.path).mkdir()
    (Path(stuck.path) / "x").write_text("x")

    async def scenario() -> None:
        service = RecordsService(make_config(storage, redis_url, sweep_interval=3600))
        await service.start()
        await until(lambda: service.stats().sweeps == 1, "the start-up sweep")
        await service.record_recording(stuck)
        assert await service.wait_published(30)
        report = await service.sweep()
        assert [(due.id, why.split(":")[0]) for due, why in report.failed] == [
            ("stuck", "IsADirectoryError")]
        assert service.stats().sweep_failures == 1
        assert client.exists("mediacore:recording:stuck")  # kept until the file goes
        assert client.zscore("mediacore:recordings:expiry", "stuck") is not None
        shutil.rmtree(stuck.path)  # the operator fixes it
        report = await service.sweep()
        assert [(d.id, d.file) for d in report.deleted] == [("stuck", "missing")]
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    assert "cannot delete" in caplog.text and "tried again at the next sweep" in caplog.text
    assert not client.exists("mediacore:recording:stuck")
    assert [e["id"] for e in events(client)] == ["stuck"]


def _chattr_works(directory: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    probe = directory / "probe"
    probe.mkdir()
    result = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
    if result.returncode != 0:
        probe.rmdir()
        return False
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.rmdir()
    return True


def test_an_immutable_directory_fails_the_command_until_fixed(tmp_path: Path) -> None:
    """Root ignores permissions, so ``chattr +i`` makes the file undeletable for real."""
    if not _chattr_works(tmp_path):
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and ext4/xfs)")
    storage = tmp_path / "var"
    config = tmp_path / "m.toml"
    config.write_text(config_toml(storage))
    locked = handle(storage, "locked")

    async def record() -> None:
        service = RecordsService(make_config(storage, sweep_interval=3600))
        await service.start()
        await until(lambda: service.stats().sweeps == 1, "the start-up sweep")
        await service.record_recording(locked)
        await service.close()

    uvloop.run(record())
    recordings = storage / "recordings"
    subprocess.run(["chattr", "+i", str(recordings)], check=True)
    try:
        result = subprocess.run([sys.executable, "-m", "mediacore", "retention", "sweep",
                                 "-c", str(config)], capture_output=True, text=True,
                                timeout=60, cwd=REPO, check=False)
        assert result.returncode == 1
        assert "0 recordings deleted" in result.stdout and "1 could not be deleted" in (
            result.stdout)
        assert "locked" in result.stderr and "PermissionError" in result.stderr
        assert Path(locked.path).exists()
    finally:
        subprocess.run(["chattr", "-i", str(recordings)], check=True)
    result = subprocess.run([sys.executable, "-m", "mediacore", "retention", "sweep", "-c",
                             str(config)], capture_output=True, text=True, timeout=60,
                            cwd=REPO, check=False)
    assert result.returncode == 0 and "1 recordings deleted" in result.stdout
    assert not Path(locked.path).exists()
    assert deletions(storage) == ["locked"]


def test_redis_only_handles_are_swept_when_they_are_ours(redis_url: str, tmp_path: Path) -> None:
    """Handles the journal does not know (an older node, by hand) come from the sorted set."""
    client = redis.Redis.from_url(redis_url)
    storage = tmp_path / "var"
    mine = handle(storage, "mine")
    theirs = handle(storage, "theirs")
    outside = handle(tmp_path / "elsewhere", "outside")
    for h, node in ((mine, ""), (theirs, "other-node"), (outside, "")):
        fields = {**h.to_fields(), "node": node}
        client.hset(f"mediacore:recording:{h.id}", mapping=fields)
        client.zadd("mediacore:recordings:expiry", {h.id: h.expires_unix})
    client.zadd("mediacore:recordings:expiry", {"orphan": 1.0})  # a member without a hash

    async def scenario() -> None:
        service = RecordsService(make_config(storage, redis_url, sweep_interval=3600))
        await service.start()  # its start-up sweep finds them
        await until(lambda: service.stats().sweeps == 1, "the start-up sweep")
        assert service.stats().recordings_deleted == 2
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    assert not Path(mine.path).exists()
    assert Path(theirs.path).exists() and Path(outside.path).exists()
    assert client.exists("mediacore:recording:theirs")
    assert client.exists("mediacore:recording:outside")
    assert sorted(e["id"] for e in events(client)) == ["mine", "orphan"]


def test_an_outage_never_keeps_a_recording_past_its_end(
    redis_server: RedisServer, persistent_redis: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    client = persistent_redis
    storage = tmp_path / "var"
    old = handle(storage, "old")

    async def scenario() -> None:
        service = RecordsService(make_config(storage, redis_url, sweep_interval=3600,
                                             retry_max_delay=0.5))
        await service.start()
        await until(lambda: service.stats().sweeps == 1, "the start-up sweep")
        await service.record_recording(old)
        assert await service.wait_published(30)
        await asyncio.to_thread(redis_server.stop)
        report = await service.sweep()
        assert [d.id for d in report.deleted] == ["old"] and report.redis_error
        assert not Path(old.path).exists()  # destroyed on time, Redis or not
        await asyncio.to_thread(redis_server.start)
        assert await service.wait_published(30)
        await service.close()

    uvloop.run(scenario())
    assert not client.exists("mediacore:recording:old")
    assert [e["id"] for e in events(client)] == ["old"]


def test_closing_during_the_start_up_sweep_does_not_wait_for_the_next_one(
    redis_url: str, tmp_path: Path
) -> None:
    """close() right after start() meets the first sweep in a Redis command. The Redis
    client can swallow that cancellation (the command returns normally); the loop must
    still end then, not sleep its hour-long interval with close() waiting on it."""
    storage = tmp_path / "var"
    config = make_config(storage, redis_url, sweep_interval=3600)

    async def start_and_close(n: int) -> None:
        service = RecordsService(config)
        await service.start()
        for _ in range(n):  # let the start-up sweep get into Redis, more or less far
            await asyncio.sleep(0)
        closing = asyncio.ensure_future(service.close())
        done, _ = await asyncio.wait({closing}, timeout=30)  # a hang, not a speed bound
        assert done, f"close() after {n} steps is still waiting for the sweep loop"

    for n in range(12):
        uvloop.run(start_and_close(n))
