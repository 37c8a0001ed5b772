"""``mediacore cdr list``, ``cdr export`` and ``retention sweep`` on a local journal."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mediacore.cli import main
from mediacore.records.journal import Journal, journal_dir
from mediacore.records.recordings import RecordingDeleted, RecordingHandle, WavFacts
from mediacore.records.timefmt import utc_now
from tests.integration.records_helpers import BASE, config_toml, make_cdr, write_wav

FACTS = WavFacts("wav", 8000, 2, Decimal("0.200"), 6_444, "00" * 32)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A journal with CDRs of two owners on three days, and acme's recordings."""
    storage = tmp_path / "var"
    now = utc_now()
    with Journal(journal_dir(storage, "test-node")) as journal:
        journal.append([
            ("cdr", make_cdr(1, start=BASE).to_fields()),
            ("cdr", make_cdr(2, start=BASE + timedelta(days=1), owner="globex",
                             number="+31800111222").to_fields()),
            ("cdr", make_cdr(3, start=BASE + timedelta(days=2), answered=False,
                             caller="anonymous").to_fields()),
            ("cdr", make_cdr(1, start=BASE).to_fields()),  # written twice by a retry
        ])
        kept = write_wav(storage / "recordings" / "kept.wav", seconds=0.2)
        expired = write_wav(storage / "recordings" / "expired.wav", seconds=0.2)
        for id, created, path in (("kept", now, kept),
                                  ("expired", now - timedelta(days=40), expired),
                                  ("lost", now, storage / "recordings" / "lost.wav"),
                                  ("swept", now, kept)):
            handle = RecordingHandle.create(call_id=f"call-{id}", number="+31900123456",
                                            owner="acme", path=path, facts=FACTS,
                                            created=created, retention_days=30, id=id)
            journal.append([("recording", handle.to_fields())])
        journal.append([("recording-deleted", RecordingDeleted(
            id="swept", call_id="call-swept", reason="expired", file="deleted",
            at=now).to_fields())])
        journal.append([("recording", RecordingHandle.create(
            call_id="call-9", number="+31800111222", owner="globex", path=kept, facts=FACTS,
            created=now, retention_days=30, id="other").to_fields())])
    path = tmp_path / "m.toml"
    path.write_text(config_toml(storage))
    return path


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, str]]:
    assert main(["cdr", "list", *argv]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_list_prints_each_cdr_once_as_csv(config: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rows = listed(capsys, "-c", str(config))
    assert [r["call_id"] for r in rows] == ["call-1", "call-2", "call-3"]
    assert rows[0] == make_cdr(1).to_fields()
    assert rows[2]["caller"] == "anonymous" and rows[2]["answer"] == ""


def test_list_as_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cdr", "list", "--format", "json", "-c", str(config)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["call_id"] for c in data] == ["call-1", "call-2", "call-3"]
    assert data[0]["duration"] == "12.340"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--owner", "acme"], ["call-1", "call-3"]),
        (["--number", "+31800111222"], ["call-2"]),
        (["--since", "2026-11-24"], ["call-2", "call-3"]),
        (["--until", "2026-11-24"], ["call-1"]),
        (["--since", "2026-11-24T15:04:11.123Z", "--until", "2026-11-25T16:04:11+01:00"],
         ["call-2"]),
        (["--since", "2026-11-23T15:04:11.124"], ["call-2", "call-3"]),  # no zone: UTC
        (["--owner", "nobody"], []),
    ],
)
def test_list_filters(config: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                      expected: list[str]) -> None:
    assert [r["call_id"] for r in listed(capsys, "-c", str(config), *argv)] == expected


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday", "23/11/2026"])
def test_bad_dates_are_usage_errors(config: Path, capsys: pytest.CaptureFixture[str],
                                    bad: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cdr", "list", "--since", bad, "-c", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --since: {bad!r} is not an ISO 8601 date or date-time" in err


def test_list_without_config_reads_var_under_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert listed(capsys) == []
    with Journal(journal_dir(tmp_path / "var", "test-node")) as journal:
        journal.append([("cdr", make_cdr(7).to_fields())])
    assert [r["call_id"] for r in listed(capsys)] == ["call-7"]


def test_a_bad_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[records]\nfsync = "sometimes"\n')
    assert main(["cdr", "list", "-c", str(bad)]) == 1
    assert "records.fsync: must be one of record, batch" in capsys.readouterr().err


def test_export_writes_history_and_the_recordings_still_kept(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    assert main(["cdr", "export", "--owner", "acme", "--out", str(out), "-c",
                 str(config)]) == 0
    said = capsys.readouterr().out
    assert "2 CDRs, 4 recordings (1 WAV files copied)" in said
    with open(out / "cdrs.csv") as handle:
        assert [r["call_id"] for r in csv.DictReader(handle)] == ["call-1", "call-3"]
    assert [c["call_id"] for c in json.loads((out / "cdrs.json").read_text())] == [
        "call-1", "call-3"]
    recordings = {r["id"]: r for r in json.loads((out / "recordings.json").read_text())}
    assert set(recordings) == {"kept", "expired", "lost", "swept"}  # not globex's
    assert recordings["kept"]["file"] == "recordings/kept.wav"
    assert (out / "recordings" / "kept.wav").read_bytes() == (
        tmp_path / "var" / "recordings" / "kept.wav").read_bytes()
    assert recordings["expired"]["note"].startswith("retention ended")
    assert recordings["lost"]["note"].startswith("file not found")
    assert recordings["swept"]["note"].startswith("deleted")
    assert sorted(p.name for p in (out / "recordings").iterdir()) == ["kept.wav"]
    with open(out / "recordings.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    # An export never mixes with an older one.
    assert main(["cdr", "export", "--owner", "acme", "--out", str(out), "-c",
                 str(config)]) == 1
    assert "exists and is not an empty directory" in capsys.readouterr().err


def test_retention_sweep_without_redis(config: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    recordings = tmp_path / "var" / "recordings"
    assert main(["retention", "sweep", "-c", str(config)]) == 0
    assert "1 recordings deleted (0 files were already gone)" in capsys.readouterr().out
    assert not (recordings / "expired.wav").exists()
    assert (recordings / "kept.wav").exists()
    assert main(["retention", "sweep", "-c", str(config)]) == 0
    assert "0 recordings deleted" in capsys.readouterr().out
