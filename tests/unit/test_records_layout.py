"""Per-node state below a shared storage dir: locks, the flat-journal move, merged reads."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import json
import logging
import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mediacore.cli import main
from mediacore.records import RecordingHandle, RecordsError, RecordsService, WavFacts
from mediacore.records.journal import Journal, journal_dir, load_cursor, read_entries
from mediacore.records.layout import (
    LayoutError,
    claim_node,
    flat_journal_present,
    journal_dirs,
    journal_root,
    migrate_flat_journal,
)
from mediacore.records.timefmt import utc_now
from tests.integration.records_helpers import BASE, make_cdr, make_config, write_wav

FACTS = WavFacts("wav", 8000, 2, Decimal("0.200"), 6_444, "00" * 32)


def write_flat_journal(storage: Path, first: int, count: int, files: int = 3) -> list[str]:
    """A journal as mediacore wrote it before per-node journals: directly in journal/."""
    root = journal_root(storage)
    ids = []
    with Journal(root, rotate_bytes=1) as journal:  # every append starts a new file
        for n in range(first, first + count):
            journal.append([("cdr", make_cdr(n).to_fields())])
            ids.append(f"call-{n}")
    assert len([p for p in root.iterdir() if p.suffix == ".jsonl"]) >= min(files, count)
    return ids


def cdr_ids(directory: Path) -> list[str]:
    return [e.data["call_id"] for e in read_entries(directory, types=("cdr",))]


# --- locks --------------------------------------------------------------------------------


def test_a_node_is_claimed_once_and_another_node_beside_it(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    first = claim_node(storage, "core1")
    try:
        assert first.directory == storage / "journal" / "core1"
        assert (first.directory / "service.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(LayoutError) as refused:
            claim_node(storage, "core1")
        message = str(refused.value)
        assert str(storage) in message and "'core1'" in message
        assert "each have their own records.node" in message
        second = claim_node(storage, "core2")  # another node: fine
        second.release()
    finally:
        first.release()
    claim_node(storage, "core1").release()  # released: free again


def test_the_service_refuses_a_second_process_of_the_same_node(tmp_path: Path) -> None:
    config = make_config(tmp_path / "var")

    async def scenario() -> str:
        async with RecordsService(config):
            second = RecordsService(config)
            with pytest.raises(RecordsError) as refused:
                await second.start()
            return str(refused.value)

    message = asyncio.run(scenario())
    assert str(tmp_path / "var") in message and "records.node" in message


def test_an_older_mediacore_holding_the_flat_lock_is_not_run_beside(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    root = journal_root(storage)
    root.mkdir(parents=True)
    fd = os.open(root / "service.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the old version takes
        os.write(fd, b"4242\n")
        with pytest.raises(LayoutError, match=r"from before per-node journals.*4242"):
            claim_node(storage, "core1", wait=0.2)
    finally:
        os.close(fd)
    claim = claim_node(storage, "core1")
    try:  # and a running node keeps the old version out (it takes LOCK_EX | LOCK_NB)
        probe = os.open(root / "service.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
    finally:
        claim.release()


# --- moving a flat journal ---------------------------------------------------------------


def test_a_flat_journal_is_moved_into_the_node_dir_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = tmp_path / "var"
    ids = write_flat_journal(storage, 1, 5)
    flat = journal_root(storage)
    before = {p.name: p.read_bytes() for p in flat.iterdir() if p.suffix == ".jsonl"}
    entries = list(read_entries(flat))
    from mediacore.records.journal import save_cursor
    save_cursor(flat, entries[2].position)
    assert flat_journal_present(storage)
    with caplog.at_level(logging.WARNING, "mediacore.records"):
        claim = claim_node(storage, "core1")
    claim.release()
    node_dir = journal_dir(storage, "core1")
    assert claim.migrated == len(before)
    assert "moved the journal from before per-node journals" in caplog.text
    assert {p.name: p.read_bytes() for p in node_dir.iterdir()
            if p.suffix == ".jsonl"} == before  # same names, same bytes
    assert load_cursor(node_dir) == entries[2].position
    assert not flat_journal_present(storage)
    assert sorted(p.name for p in flat.iterdir()) == ["core1", "service.lock"]
    assert cdr_ids(node_dir) == ids
    caplog.clear()
    claim_node(storage, "core2").release()  # nothing left to move, nothing moved twice
    assert "moved the journal" not in caplog.text
    assert journal_dirs(storage) == [("core1", node_dir)]


def test_a_move_interrupted_halfway_is_finished_by_the_next_start(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    ids = write_flat_journal(storage, 1, 4)
    flat = journal_root(storage)
    files = sorted(p for p in flat.iterdir() if p.suffix == ".jsonl")
    target = flat / "core1"
    target.mkdir()
    # What a crash left: the marker, one file moved, one linked but not yet unlinked.
    (flat / "migrating.json").write_text(json.dumps({"node": "core1", "seq_offset": 0}))
    os.rename(files[0], target / files[0].name)
    os.link(files[1], target / files[1].name)
    # Readers meanwhile see every record, once.
    merged = [d for _, d in journal_dirs(storage)]
    from mediacore.records.history import iter_cdrs
    assert sorted(c.call_id for c in iter_cdrs(merged)) == ids
    # The next start, of another node, finishes the move into the node that began it.
    claim_node(storage, "core2").release()
    assert cdr_ids(target) == ids
    assert not (flat / "migrating.json").exists()
    assert not journal_dir(storage, "core2").joinpath(files[2].name).exists()
    assert not flat_journal_present(storage)


def test_a_flat_journal_next_to_a_node_journal_is_appended_after_it(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    node_dir = journal_dir(storage, "core1")
    with Journal(node_dir) as journal:
        journal.append([("cdr", make_cdr(1).to_fields())])
    from mediacore.records.journal import save_cursor
    save_cursor(node_dir, list(read_entries(node_dir))[-1].position)
    write_flat_journal(storage, 2, 2)  # an older version, run again after the upgrade
    moved = migrate_flat_journal(storage, "core1")
    assert moved == 2
    assert cdr_ids(node_dir) == ["call-1", "call-2", "call-3"]
    assert load_cursor(node_dir) is not None and load_cursor(node_dir).seq == 1  # type: ignore[union-attr]
    assert not flat_journal_present(storage)


def test_a_file_with_the_same_name_is_never_overwritten(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    write_flat_journal(storage, 1, 1)
    flat = journal_root(storage)
    name = next(p.name for p in flat.iterdir() if p.suffix == ".jsonl")
    (flat / "core1").mkdir()
    (flat / "core1" / name).write_text("something else\n")
    (flat / "migrating.json").write_text(json.dumps({"node": "core1", "seq_offset": 0}))
    with pytest.raises(LayoutError, match="different file"):
        claim_node(storage, "core1")
    assert (flat / name).exists() and (flat / "core1" / name).read_text() == "something else\n"


def test_the_service_starts_on_a_flat_journal_and_publishes_from_the_node_dir(
        tmp_path: Path) -> None:
    storage = tmp_path / "var"
    write_flat_journal(storage, 1, 3)
    config = make_config(storage)

    async def scenario() -> None:
        async with RecordsService(config) as service:
            await service.record_cdr(make_cdr(4))

    asyncio.run(scenario())
    assert cdr_ids(journal_dir(storage, "test-node")) == ["call-1", "call-2", "call-3",
                                                          "call-4"]


# --- reading every node ------------------------------------------------------------------


def two_nodes(tmp_path: Path) -> Path:
    """Two nodes' journals, their calls interleaved in time; a config of node core1."""
    storage = tmp_path / "var"
    for node, numbers in (("core1", (1, 3, 5)), ("core2", (2, 4))):
        with Journal(journal_dir(storage, node)) as journal:
            for n in numbers:
                cdr = make_cdr(n, start=BASE + timedelta(minutes=n), node=node)
                journal.append([("cdr", cdr.to_fields())], at=cdr.end)
    path = tmp_path / "m.toml"
    path.write_text(f'[storage]\ndir = "{storage}"\n[records]\nnode = "core1"\n')
    return path


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, str]]:
    assert main(["cdr", "list", *argv]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_cdr_list_merges_every_node_in_time_order(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = str(two_nodes(tmp_path))
    rows = listed(capsys, "-c", config)
    assert [r["call_id"] for r in rows] == [f"call-{n}" for n in (1, 2, 3, 4, 5)]
    assert [r["node"] for r in rows] == ["core1", "core2", "core1", "core2", "core1"]
    assert [r["call_id"] for r in listed(capsys, "-c", config, "--node", "core2")] == [
        "call-2", "call-4"]
    assert listed(capsys, "-c", config, "--node", "core9") == []
    assert main(["cdr", "list", "-c", config, "--node", "../x"]) == 2


def test_cdr_export_reads_every_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(two_nodes(tmp_path))
    out = tmp_path / "out"
    assert main(["cdr", "export", "--owner", "acme", "--out", str(out), "-c", config]) == 0
    assert "5 CDRs" in capsys.readouterr().out
    assert main(["cdr", "export", "--owner", "acme", "--out", str(tmp_path / "o2"),
                 "--node", "core1", "-c", config]) == 0
    assert "3 CDRs" in capsys.readouterr().out


def test_retention_sweep_takes_the_configured_node_or_the_named_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "var"
    old = utc_now() - timedelta(days=40)
    for node in ("core1", "core2"):
        wav = write_wav(storage / "recordings" / f"{node}.wav", seconds=0.2)
        handle = RecordingHandle.create(call_id=f"call-{node}", number="+31900123456",
                                        owner="acme", path=wav, facts=FACTS, created=old,
                                        retention_days=30, id=node, node=node)
        with Journal(journal_dir(storage, node)) as journal:
            journal.append([("recording", handle.to_fields())])
    config = tmp_path / "m.toml"
    config.write_text(f'[storage]\ndir = "{storage}"\n[records]\nnode = "core1"\n')
    assert main(["retention", "sweep", "-c", str(config)]) == 0
    assert "1 recordings deleted" in capsys.readouterr().out
    assert not (storage / "recordings" / "core1.wav").exists()
    assert (storage / "recordings" / "core2.wav").exists()  # another node's: not ours
    assert main(["retention", "sweep", "-c", str(config), "--all-nodes"]) == 0
    out = capsys.readouterr().out
    assert "1 recordings deleted" in out and "core1, core2" in out  # core1's: not twice
    assert not (storage / "recordings" / "core2.wav").exists()
    deletions = [e.data["id"] for node in ("core1", "core2")
                 for e in read_entries(journal_dir(storage, node), types=("recording-deleted",))]
    assert deletions == ["core1", "core2"]  # each in its own node's journal, once
    assert main(["retention", "sweep", "-c", str(config), "--node", "core2"]) == 0
    assert "0 recordings deleted" in capsys.readouterr().out
