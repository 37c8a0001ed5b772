"""Bounded state: a simulated day (or more) of calls through the records plane, measured.

Drives the real ``RecordsService`` against a real redis-server with a
simulated clock: ``--rate`` calls per simulated second for ``--hours``,
every ``--record-every``-th call recorded (a small real file) with a
retention cycling through ``--retention-hours``; a retention sweep and a
journal prune after every simulated ``--step`` seconds, as the server's
sweep loop does; and a restart of the service at each ``--restart-at``
hour (retention must stay exact across pruning and restarts). Every
simulated hour it samples:

* journal bytes on disk (``journal-*.jsonl`` + ``carried.jsonl``) and files;
* Redis ``used_memory``, key count, the two streams' lengths, the dedupe
  window's size, live recording hashes.

At the end it checks what must hold whatever the numbers: each record
was published exactly once (fresh publications = records journaled; the
restarts' replays all counted as duplicates), the CDR stream's entries are
distinct and the newest ones, every recording past its retention was
deleted and none before. ``--json`` writes the samples.

The 24-hour run in benchmarks/RESULTS.md::

    .venv/bin/python benchmarks/records_soak.py --hours 24 --rate 20 --json /tmp/soak.json

tests/integration/test_records_bounded.py runs a scaled-down version and
asserts the bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mediacore.config import parse_config  # noqa: E402
from mediacore.records import RecordingHandle, RecordsService, WavFacts  # noqa: E402
from mediacore.records.cdr import Cdr  # noqa: E402
from mediacore.records.journal import journal_dir, journal_files  # noqa: E402

T0 = datetime(2026, 6, 1, tzinfo=UTC)
FACTS = WavFacts("wav", 8000, 2, Decimal("1.000"), 44, "0" * 64)
WAV = b"RIFF" + b"\0" * 40


class SimClock:
    """The service's clock: moved by the driver, never by the wall."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Options:
    hours: float = 24.0
    rate: float = 20.0  # calls per simulated second
    step: float = 60.0  # simulated seconds between sweeps (the server's sweep_interval)
    record_every: int = 10
    retention_hours: tuple[float, ...] = (3.0, 12.0)
    keep_days: float = 0.25
    cdr_maxlen: int = 200_000
    events_maxlen: int = 20_000
    window: int = 100_000
    rotate_mb: int = 16
    publish_batch: int = 500
    restart_at: tuple[float, ...] = (10.0, 17.0)
    sample_every: float = 3600.0


@dataclass
class Sample:
    hour: float
    journal_bytes: int
    journal_files: int
    carried_bytes: int
    used_memory: int
    keys: int
    cdr_stream: int
    events_stream: int
    window_ids: int
    live_recordings: int
    recording_files: int


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    cdrs: int = 0
    recordings: int = 0
    deletions: int = 0
    published: int = 0
    duplicates: int = 0
    journaled: int = 0
    pruned_files: int = 0
    pruned_bytes: int = 0
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def make_config(storage: Path, redis_url: str, options: Options) -> Any:
    return parse_config({
        "storage": {"dir": str(storage)},
        "records": {"node": "soak", "fsync": "batch", "batch_ms": 20,
                    "rotate_mb": options.rotate_mb, "journal_keep_days": options.keep_days},
        "redis": {"url": redis_url, "cdr_stream_maxlen": options.cdr_maxlen,
                  "events_stream_maxlen": options.events_maxlen},
    }, "soak.toml")


def cdr(n: int, start: datetime, recording: str) -> Cdr:
    answer = start + timedelta(seconds=2)
    return Cdr(call_id=f"soak-{n:09d}", sip_call_id=f"sip-{n}@carrier", number="+31900123456",
               owner="acme", caller="+31612345678", target="sip:+31201234567@127.0.0.1:5070",
               start=start, answer=answer, end=answer + timedelta(seconds=95),
               disposition="answered", sip_status=200, hangup_by="caller",
               recording=recording, node="")


async def sample(storage: Path, client: aioredis.Redis, hour: float) -> Sample:
    directory = journal_dir(storage, "soak")
    files = journal_files(directory)
    size = sum(p.stat().st_size for _, p in files if p.exists())
    carried = directory / "carried.jsonl"
    carried_bytes = carried.stat().st_size if carried.exists() else 0
    info = await client.info("memory")
    return Sample(
        hour=round(hour, 3), journal_bytes=size + carried_bytes, journal_files=len(files),
        carried_bytes=carried_bytes, used_memory=int(info["used_memory"]),
        keys=int(await client.dbsize()), cdr_stream=int(await client.xlen("mediacore:cdr")),
        events_stream=int(await client.xlen("mediacore:recording-events")),
        window_ids=int(await client.hlen("mediacore:seen:soak"))
        + int(await client.hlen("mediacore:seen:soak:old")),
        live_recordings=int(await client.zcard("mediacore:recordings:expiry")),
        recording_files=sum(1 for _ in (storage / "recordings").iterdir()),
    )


async def run_soak(storage: Path, redis_url: str, options: Options,
                   progress: bool = False) -> Outcome:
    """The whole run; returns the samples and what the final checks found."""
    clock = SimClock(T0)
    config = make_config(storage, redis_url, options)
    client = aioredis.Redis.from_url(redis_url)
    out = Outcome()
    recordings = storage / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    expires: dict[str, datetime] = {}
    started = time.monotonic()

    async def start() -> RecordsService:
        service = RecordsService(config, clock=clock, publish_batch=options.publish_batch,
                                 marker_window=options.window)
        await service.start()
        return service

    async def stop(service: RecordsService) -> None:
        assert await service.wait_published(120), "publication did not catch up"
        stats = service.stats()
        out.published += stats.published
        out.duplicates += stats.duplicates
        out.journaled += stats.journaled
        out.deletions += stats.recordings_deleted
        out.pruned_files += stats.journal_files_pruned
        out.pruned_bytes += stats.journal_bytes_pruned
        await service.close()

    service = await start()
    end = T0 + timedelta(hours=options.hours)
    restarts = sorted(options.restart_at)
    next_sample = 0.0
    n = 0
    carry = 0.0
    while clock.now < end:
        elapsed = (clock.now - T0).total_seconds()
        if elapsed >= next_sample:
            out.samples.append(await sample(storage, client, elapsed / 3600))
            next_sample += options.sample_every
            if progress:
                s = out.samples[-1]
                print(f"h {s.hour:6.2f}  journal {s.journal_bytes / 2**20:8.1f} MiB "
                      f"({s.journal_files} files)  redis {s.used_memory / 2**20:7.1f} MiB "
                      f"keys {s.keys:7d}  cdr {s.cdr_stream:7d}  window {s.window_ids:6d}  "
                      f"wall {time.monotonic() - started:6.0f} s", flush=True)
        if restarts and elapsed >= restarts[0] * 3600:
            restarts.pop(0)
            await stop(service)
            service = await start()
        carry += options.rate * options.step
        calls, carry = int(carry), carry - int(carry)
        futures = []
        base = clock.now
        for i in range(calls):
            at = base + timedelta(seconds=options.step * i / max(1, calls))
            clock.now = at
            recording = ""
            if n % options.record_every == 0:
                hours = options.retention_hours[(n // options.record_every)
                                                % len(options.retention_hours)]
                path = recordings / f"soak-{n:09d}.wav"
                path.write_bytes(WAV)
                made = RecordingHandle.create(
                    call_id=f"soak-{n:09d}", number="+31900123456", owner="acme", path=path,
                    facts=FACTS, created=at, retention_days=0)
                made = replace(made, expires=made.created + timedelta(hours=hours))
                recording = made.id
                expires[made.id] = made.expires
                futures.append(service.record_recording(made))
                out.recordings += 1
            futures.append(service.record_cdr(cdr(n, at, recording)))
            n += 1
        await asyncio.gather(*futures)
        out.cdrs = n
        clock.now = T0 + timedelta(seconds=elapsed + options.step)
        await service.sweep()
        await service.wait_published(120)
        await service.prune()
    out.samples.append(await sample(storage, client, (clock.now - T0).total_seconds() / 3600))
    await service.sweep()
    await stop(service)
    out.wall_seconds = time.monotonic() - started
    await check(out, storage, client, expires, clock.now, options)
    await client.aclose()
    return out


async def check(out: Outcome, storage: Path, client: aioredis.Redis,
                expires: dict[str, datetime], now: datetime, options: Options) -> None:
    """What must hold, whatever the numbers (problems are listed, not raised)."""
    records = out.cdrs + out.recordings + out.deletions
    if out.journaled != records:
        out.problems.append(f"journaled {out.journaled}, expected {records}")
    if out.published != records:
        out.problems.append(f"published {out.published} fresh, expected {records} "
                            f"(each exactly once)")
    entries = await client.xrange("mediacore:cdr", count=options.cdr_maxlen * 2 + 1000)
    ids = [fields[b"call_id"].decode() for _, fields in entries]
    if len(ids) != len(set(ids)):
        out.problems.append("a CDR is in the stream twice")
    if ids != [f"soak-{i:09d}" for i in range(out.cdrs - len(ids), out.cdrs)]:
        out.problems.append("the stream does not hold the newest CDRs, in order")
    if options.cdr_maxlen and len(ids) > options.cdr_maxlen + 100:
        out.problems.append(f"the CDR stream has {len(ids)} entries, cap {options.cdr_maxlen}")
    gone = sum(1 for when in expires.values() if when <= now)
    left = sum(1 for _ in (storage / "recordings").iterdir())
    if left != len(expires) - gone or out.deletions != gone:
        out.problems.append(f"{left} recording files left and {out.deletions} deleted; "
                            f"expected {len(expires) - gone} and {gone}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--hours", type=float, default=defaults.hours)
    parser.add_argument("--rate", type=float, default=defaults.rate)
    parser.add_argument("--step", type=float, default=defaults.step)
    parser.add_argument("--record-every", type=int, default=defaults.record_every)
    parser.add_argument("--retention-hours", type=float, nargs="+",
                        default=list(defaults.retention_hours))
    parser.add_argument("--keep-days", type=float, default=defaults.keep_days)
    parser.add_argument("--cdr-maxlen", type=int, default=defaults.cdr_maxlen)
    parser.add_argument("--events-maxlen", type=int, default=defaults.events_maxlen)
    parser.add_argument("--window", type=int, default=defaults.window)
    parser.add_argument("--rotate-mb", type=int, default=defaults.rotate_mb)
    parser.add_argument("--restart-at", type=float, nargs="*",
                        default=list(defaults.restart_at))
    parser.add_argument("--json", type=Path, help="write the samples and totals here")
    args = parser.parse_args()
    options = Options(hours=args.hours, rate=args.rate, step=args.step,
                      record_every=args.record_every,
                      retention_hours=tuple(args.retention_hours), keep_days=args.keep_days,
                      cdr_maxlen=args.cdr_maxlen, events_maxlen=args.events_maxlen,
                      window=args.window, rotate_mb=args.rotate_mb,
                      restart_at=tuple(args.restart_at))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    from tests.support.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="records-soak-"))
    server = RedisServer(binary, work / "redis")
    server.start()
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
        print(f"{version}\n{options}", flush=True)
        out = asyncio.run(run_soak(work / "storage", server.url, options, progress=True))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{out.cdrs} CDRs, {out.recordings} recordings, {out.deletions} deleted; "
          f"{out.published} published fresh, {out.duplicates} replays dropped; "
          f"{out.pruned_files} journal files pruned ({out.pruned_bytes / 2**20:.0f} MiB); "
          f"{out.wall_seconds:.0f} s wall")
    for problem in out.problems:
        print(f"PROBLEM: {problem}")
    if args.json:
        args.json.write_text(json.dumps({"options": asdict(options), **asdict(out)}, indent=1))
    return 1 if out.problems else 0


if __name__ == "__main__":
    sys.exit(main())
