"""Journal append throughput per fsync policy, in CDRs per second.

Each round appends ``RECORDS`` real CDR lines (about 500 bytes each) to a
fresh journal and waits until all of them are durable as the policy
defines it; ``extra_info["records_per_s"]`` is RECORDS / median round time.

* ``write only``: ``Journal.append`` per record, no fsync: the cost of a
  record between fsyncs, the ceiling of any policy.
* ``fsync per record, one at a time``: ``Journal.append(sync=True)`` per
  record, sequentially: a single caller that waits for each record, i.e.
  the rate at which one call after another could end with no overlap.
* ``writer record``: ``fsync = "record"`` through the writer thread, all
  records submitted at once from the event loop (many calls ending
  together): group commit shares each fsync.
* ``writer record, awaited one by one``: the same policy when every record
  is awaited before the next is submitted: fsync latency bound.
* ``writer batch``: ``fsync = "batch"`` (100 records / 200 ms), all at once.
* ``service + Redis``: ``RecordsService.record_cdr`` with ``fsync =
  "record"`` until every CDR is in the Redis stream (needs redis-server).

    .venv/bin/pytest benchmarks/bench_journal.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvloop

from mediacore.records.journal import Journal
from mediacore.records.writer import FsyncPolicy, JournalWriter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.records_helpers import make_cdr, make_config  # noqa: E402

RECORDS = 2000
SEQUENTIAL_FSYNC_RECORDS = 300  # each costs an fdatasync: keep the round short

CDRS = [make_cdr(i).to_fields() for i in range(RECORDS)]


def _fresh(tmp_path: Path) -> Path:
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    return directory / "journal"


def _report(benchmark, records: int) -> None:  # type: ignore[no-untyped-def]
    median = benchmark.stats.stats.median
    benchmark.extra_info["records"] = records
    benchmark.extra_info["records_per_s"] = round(records / median)
    benchmark.extra_info["us_per_record"] = round(median / records * 1e6, 1)


def test_write_only(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def run(journal: Journal) -> None:
        for data in CDRS:
            journal.append([("cdr", data)], sync=False)
        journal.close()

    benchmark.group = "journal append"
    benchmark.pedantic(run, setup=lambda: ((Journal(_fresh(tmp_path)),), {}), rounds=10)
    _report(benchmark, RECORDS)


def test_fsync_per_record_one_at_a_time(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def run(journal: Journal) -> None:
        for data in CDRS[:SEQUENTIAL_FSYNC_RECORDS]:
            journal.append([("cdr", data)], sync=True)
        journal.close()

    benchmark.group = "journal append"
    benchmark.pedantic(run, setup=lambda: ((Journal(_fresh(tmp_path)),), {}), rounds=5)
    _report(benchmark, SEQUENTIAL_FSYNC_RECORDS)


async def _through_writer(directory: Path, policy: FsyncPolicy, one_by_one: bool,
                          records: int) -> int:
    journal = Journal(directory)
    writer = JournalWriter(journal, policy)
    now = datetime.now(UTC)
    if one_by_one:
        for data in CDRS[:records]:
            await writer.submit("cdr", data, now)
    else:
        await asyncio.gather(*(writer.submit("cdr", data, now) for data in CDRS[:records]))
    await writer.close()
    journal.close()
    return journal.syncs


@pytest.mark.parametrize(
    ("name", "policy", "one_by_one", "records"),
    [
        ("record", FsyncPolicy("record"), False, RECORDS),
        ("record, awaited one by one", FsyncPolicy("record"), True, SEQUENTIAL_FSYNC_RECORDS),
        ("batch 100/200ms", FsyncPolicy("batch", 100, 200.0), False, RECORDS),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_writer_thread(benchmark, tmp_path: Path, name: str, policy: FsyncPolicy,  # type: ignore[no-untyped-def]
                       one_by_one: bool, records: int) -> None:
    syncs: list[int] = []

    def run(directory: Path) -> None:
        syncs.append(uvloop.run(_through_writer(directory, policy, one_by_one, records)))

    benchmark.group = "journal append"
    benchmark.pedantic(run, setup=lambda: ((_fresh(tmp_path),), {}), rounds=5)
    _report(benchmark, records)
    benchmark.extra_info["fsyncs_per_round"] = round(sum(syncs) / len(syncs))


def test_service_into_redis(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.redis_server import RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed")
    import redis

    from mediacore.records import RecordsService

    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    client = redis.Redis.from_url(server.url)

    async def publish(storage: Path) -> None:
        service = RecordsService(make_config(storage, server.url, sweep_interval=3600))
        await service.start()
        await asyncio.gather(*(service.record_cdr(make_cdr(i)) for i in range(RECORDS)))
        assert await service.wait_published(60)
        await service.close()

    def setup() -> tuple[tuple[Path], dict[str, object]]:
        client.flushall()
        return (_fresh(tmp_path).parent,), {}

    try:
        benchmark.group = "journal append"
        benchmark.pedantic(lambda storage: uvloop.run(publish(storage)), setup=setup,
                           rounds=5)
        assert client.xlen("mediacore:cdr") == RECORDS
    finally:
        client.close()
        server.stop()
        shutil.rmtree(tmp_path / "redis", ignore_errors=True)
    _report(benchmark, RECORDS)
