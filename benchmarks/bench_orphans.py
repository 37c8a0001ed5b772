"""What recovering a crash's recordings costs, and what the markers cost every call.

* ``marker per recording``: ``OpenRecordings.add`` then ``discard``, as the
  event loop does once per recorded call (write + rename at the start,
  unlink once the handle is durable): ``extra_info["us_per_recording"]``.
* ``recover marked``: a RecordsService started on a storage dir that a
  killed node left with ``MARKED`` torn recordings of ``SECONDS`` s each:
  repair, hash, journal a CDR and a handle each (fsync per record, group
  commit), remove the markers. ``extra_info["ms_per_orphan"]``.
* ``scan unmarked``: the first scan after an upgrade, ``UNMARKED`` files in
  ``recordings/`` all named by handles in the journal (nothing to do but
  prove it): ``extra_info["us_per_file"]``, the rate a large node's first
  scan goes at (it runs in the background).

    .venv/bin/pytest benchmarks/bench_orphans.py --benchmark-only
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mediacore.records import RecordsService  # noqa: E402
from mediacore.records.journal import journal_dir  # noqa: E402
from mediacore.records.open_recordings import OpenRecordings, RecordingStarted  # noqa: E402
from mediacore.records.orphans import UnmarkedScan  # noqa: E402
from tests.integration.records_helpers import make_config, write_wav  # noqa: E402

MARKED = 100
SECONDS = 30.0
UNMARKED = 20_000
NODE = "test-node"
T0 = datetime.now(UTC) - timedelta(minutes=10)


def started(n: int) -> RecordingStarted:
    return RecordingStarted(
        file=f"{n:016x}.wav", kind="call", call_id=f"{n:016x}", sip_call_id=f"{n}@c",
        number="+31900123456", owner="acme", caller="+31612345678",
        target="sip:+31201234567@127.0.0.1:5070", retention_days=30, start=T0,
        answer=T0 + timedelta(seconds=3), recording_start=T0 + timedelta(seconds=3),
        channels=2, node=NODE)


def test_marker_per_recording(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    markers = OpenRecordings(tmp_path, NODE)
    markers.ensure()
    made = [started(n) for n in range(5000)]
    count = iter(range(len(made)))

    def one() -> None:
        # As in the server: each call's marker is new, and an earlier call's handle
        # became durable meanwhile, so its marker goes.
        n = next(count)
        markers.add(made[n])
        if n >= 50:
            markers.discard(made[n - 50].file)

    benchmark.pedantic(one, rounds=4000, iterations=1, warmup_rounds=100)
    benchmark.extra_info["us_per_recording"] = round(benchmark.stats.stats.median * 1e6, 1)


def _crashed_storage(tmp_path: Path) -> Path:
    storage = Path(tempfile.mkdtemp(dir=tmp_path)) / "var"
    template = write_wav(tmp_path / "template.wav", SECONDS)
    with open(template, "r+b") as f:  # the header as a killed writer leaves it
        f.seek(40)
        f.write(struct.pack("<I", 16000))
    markers = OpenRecordings(storage, NODE)
    (storage / "recordings").mkdir(parents=True)
    for n in range(MARKED):
        markers.add(started(n))
        shutil.copyfile(template, storage / "recordings" / f"{n:016x}.wav")
    return storage


def test_recover_marked(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def setup() -> tuple[tuple[Path], dict[str, object]]:
        return (_crashed_storage(tmp_path),), {}

    def recover(storage: Path) -> None:
        async def run() -> None:
            service = RecordsService(make_config(storage, sweep_interval=3600))
            await service.start()
            report = await service.start_recovery()
            await service.close()
            assert report.adopted == MARKED, report

        uvloop.run(run())

    benchmark.pedantic(recover, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["orphans"] = MARKED
    benchmark.extra_info["seconds_each"] = SECONDS
    benchmark.extra_info["ms_per_orphan"] = round(
        benchmark.stats.stats.median / MARKED * 1e3, 2)


def _known_storage(tmp_path: Path) -> Path:
    storage = Path(tempfile.mkdtemp(dir=tmp_path)) / "var"
    recordings = storage / "recordings"
    template = write_wav(tmp_path / "small.wav", 0.1)
    directory = journal_dir(storage, NODE)
    directory.mkdir(parents=True)
    lines = []
    recordings.mkdir(parents=True)
    for n in range(UNMARKED):
        path = recordings / f"{n:016x}.wav"
        shutil.copyfile(template, path)
        lines.append(json.dumps({"type": "recording", "v": 1, "at": "2026-11-23T15:00:00.000Z",
                                 "data": {"id": f"{n:016x}", "call_id": f"{n:016x}",
                                          "path": str(path), "kind": "call"}},
                                separators=(",", ":")) + "\n")
    (directory / "journal-000001-20261123.jsonl").write_text("".join(lines))
    return storage


def test_scan_unmarked(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def setup() -> tuple[tuple[Path], dict[str, object]]:
        return (_known_storage(tmp_path),), {}

    def scan(storage: Path) -> None:
        run = UnmarkedScan(storage, NODE, retention_of=lambda number: 30, quiet=0.0)
        assert run.begin()
        found = []
        while (batch := run.next_batch()) is not None:
            found += batch
        run.finish()
        assert found == []  # every file is accounted for

    benchmark.pedantic(scan, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["files"] = UNMARKED
    benchmark.extra_info["us_per_file"] = round(
        benchmark.stats.stats.median / UNMARKED * 1e6, 1)


