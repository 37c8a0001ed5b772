"""Recordings a crash left behind (records/orphans.py, records/open_recordings.py).

Files on a temporary storage dir, journals written with the real Journal,
clocks injected: what each kind of leftover becomes (adopted with a handle
and a crash CDR, destroyed, or only its marker removed), and that an
unmarked file is left alone while it may still be written.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mediacore.records.carried import CARRIED, header_line
from mediacore.records.cdr import Cdr
from mediacore.records.journal import Journal, journal_dir
from mediacore.records.open_recordings import (
    OpenRecordings,
    RecordingStarted,
    marked_files,
)
from mediacore.records.orphans import (
    SCAN_STATE,
    Decision,
    UnmarkedScan,
    examine_marked,
    read_facts,
    unlink_orphan,
    unmarked_scan_due,
)
from mediacore.records.recordings import RecordingDeleted, RecordingHandle, describe_wav
from mediacore.sip import message as sip
from tests.integration.records_helpers import make_cdr, write_wav
from tests.unit.test_call_flows import (
    CARRIER,
    START,
    TARGET_1,
    Harness,
    answer_from_target,
    in_dialog,
    invite,
    only,
    ring_and_answer,
    target_peer,
)

NODE = "core1"
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def started(call_id: str = "a1b2c3d4e5f60718", *, kind: str = "call", retention: int = 30,
            caller: str = "+31612345678", node: str = NODE) -> RecordingStarted:
    suffix = "-voicemail" if kind == "voicemail" else ""
    return RecordingStarted(
        file=f"{call_id}{suffix}.wav", kind=kind, call_id=call_id, sip_call_id=f"{call_id}@c",
        number="+31900123456", owner="acme", caller=caller,
        target="" if kind == "voicemail" else "sip:+31201234567@127.0.0.1:5070",
        retention_days=retention, start=T0, answer=T0 + timedelta(seconds=3),
        recording_start=T0 + timedelta(seconds=3 if kind == "call" else 9),
        channels=1 if kind == "voicemail" else 2, node=node)


def torn(path: Path, seconds: float, channels: int = 2) -> Path:
    """A WAV as a killed writer leaves it: audio on file, the header claiming none."""
    write_wav(path, seconds, channels)
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 36))
        f.seek(40)
        f.write(struct.pack("<I", 0))
    return path


def journal(storage: Path, node: str = NODE) -> Journal:
    return Journal(journal_dir(storage, node))


def records(storage: Path, node: str = NODE) -> list[tuple[str, dict[str, str]]]:
    found = []
    for _, path in sorted((p.name, p) for p in journal_dir(storage, node).glob("journal-*")):
        for line in path.read_text().splitlines():
            obj = json.loads(line)
            found.append((obj["type"], obj["data"]))
    return found


# --- the marker --------------------------------------------------------------------------


def test_a_marker_round_trips_through_its_json() -> None:
    marker = started()
    assert RecordingStarted.from_json(marker.to_json()) == marker
    assert json.loads(marker.to_json())["caller"] == "+31612345678"


@pytest.mark.parametrize("changes", [
    {"file": "../etc/passwd.wav"}, {"file": "x.mp3"}, {"file": ".hidden.wav"},
    {"kind": "voicemail-ish"}, {"call_id": ""}, {"retention_days": -1},
    {"retention_days": True}, {"channels": 3},
    {"answer": T0 - timedelta(seconds=1)},
    {"recording_start": T0 + timedelta(seconds=1)},  # before the answer
])
def test_a_marker_refuses_what_it_cannot_be(changes: dict[str, object]) -> None:
    fields = {name: getattr(started(), name) for name in started().__slots__}  # type: ignore[attr-defined]
    fields.update(changes)
    with pytest.raises(ValueError):
        RecordingStarted(**fields)  # type: ignore[arg-type]


def test_the_crash_cdr_ends_at_the_recorded_length() -> None:
    cdr = started().crash_cdr(12.3456, node=NODE, recording="a1b2c3d4e5f60718")
    assert cdr.disposition == "answered" and cdr.hangup_by == "system"
    assert cdr.recording_error == "crash" and cdr.sip_status == 200
    assert cdr.answer == T0 + timedelta(seconds=3)
    assert cdr.end == T0 + timedelta(seconds=3, milliseconds=12345)
    assert cdr.duration == Decimal("12.345") and cdr.node == NODE
    voicemail = started(kind="voicemail").crash_cdr(4.0, node=NODE, recording="")
    assert voicemail.disposition == "voicemail" and voicemail.recording == ""
    # billed from the answer: the greeting (answer to recording start) counts too
    assert voicemail.duration == Decimal("10.000")


def test_markers_are_written_whole_listed_read_and_discarded(tmp_path: Path) -> None:
    markers = OpenRecordings(tmp_path, NODE)
    markers.add(started("aaaa"))
    markers.add(started("bbbb", kind="voicemail"))
    assert markers.files() == ["aaaa.wav", "bbbb-voicemail.wav"]
    assert sorted(p.name for p in markers.directory.iterdir()) == [
        "aaaa.wav.json", "bbbb-voicemail.wav.json"]  # no temporary file left
    assert markers.read("aaaa.wav") == started("aaaa")
    OpenRecordings(tmp_path, "core2").add(started("cccc", node="core2"))
    assert marked_files(tmp_path) == {"aaaa.wav", "bbbb-voicemail.wav", "cccc.wav"}
    markers.discard("aaaa.wav")
    markers.discard("aaaa.wav")  # gone already: fine
    assert markers.files() == ["bbbb-voicemail.wav"]
    assert markers.read("aaaa.wav") is None


def test_an_unreadable_marker_reads_as_none_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    markers = OpenRecordings(tmp_path, NODE)
    markers.directory.mkdir(parents=True)
    markers.path("dddd.wav").write_text("{not json")
    with caplog.at_level(logging.ERROR, "mediacore.records"):
        assert markers.read("dddd.wav") is None
    assert "unreadable" in caplog.text


# --- the call layer writes what a restart needs --------------------------------------


def test_a_recorded_call_hands_its_marker_to_the_media(tmp_path: Path) -> None:
    h = Harness(tmp_path, record=True, retention_days=90)
    h.receive(invite(), CARRIER)
    call = next(iter(h.b2bua.calls.values()))
    out = h.settle(h.b2bua.announcement_finished(call.id, 2.5))
    onward = only([sip.parse(t.data) for t in out], sip.Request, method="INVITE")
    h.receive(answer_from_target(onward, 200), target_peer(onward), at=4.0)
    marker = h.media[0].started
    assert marker is not None and h.media[0].recording == tmp_path / marker.file
    assert marker.file == f"{call.id}.wav" and marker.kind == "call"
    assert (marker.call_id, marker.sip_call_id) == (call.id, "call-1")
    assert (marker.number, marker.owner, marker.retention_days) == ("+31900123456", "acme", 90)
    assert marker.caller == "+31612345678" and marker.target == TARGET_1
    assert marker.start == START and marker.answer == START + timedelta(seconds=4)
    assert marker.recording_start == marker.answer and marker.channels == 2


def test_a_withheld_callers_marker_says_anonymous(tmp_path: Path) -> None:
    h = Harness(tmp_path, record=True)
    h.receive(invite(from_='"Anonymous" <sip:anonymous@anonymous.invalid>;tag=c1',
                     extra="P-Asserted-Identity: <tel:+31612345678>\r\nPrivacy: id\r\n"),
              CARRIER)
    call = next(iter(h.b2bua.calls.values()))
    out = h.settle(h.b2bua.announcement_finished(call.id, 2.5))
    onward = only([sip.parse(t.data) for t in out], sip.Request, method="INVITE")
    h.receive(answer_from_target(onward, 200), target_peer(onward), at=4.0)
    marker = h.media[0].started
    assert marker is not None and marker.caller == "anonymous"
    assert "31612345678" not in marker.to_json()


def test_an_unrecorded_call_writes_no_marker(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    ring_and_answer(h)
    assert h.media[0].started is None and h.media[0].recording is None


def test_a_voicemail_marker_starts_after_the_greeting(tmp_path: Path) -> None:
    h = Harness(tmp_path, voicemail_email="owner@example.com")
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(first, 486), target_peer(first), at=0.5)
    second = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(second, 480, tag="t2"), target_peer(second), at=1.0)
    ok = only(out, sip.Response)
    call = next(iter(h.b2bua.calls.values()))
    h.receive(in_dialog("ACK", ok, 1, "z9hG4bKvmack"), CARRIER, at=1.1)
    h.settle(h.b2bua.announcement_finished(call.id, 5.0))
    h.settle(h.b2bua.announcement_finished(call.id, 5.3))
    marker = h.media[0].started
    assert marker is not None and marker.kind == "voicemail" and marker.channels == 1
    assert marker.file == f"{call.id}-voicemail.wav" and marker.target == ""
    assert marker.answer == START + timedelta(seconds=1)
    assert marker.recording_start == START + timedelta(seconds=5.3)


# --- marked recordings: a dead incarnation's --------------------------------------------


def leave(storage: Path, marker: RecordingStarted) -> Path:
    OpenRecordings(storage, marker.node or NODE).add(marker)
    return storage / "recordings" / marker.file


def decide(storage: Path) -> dict[str, Decision]:
    files = OpenRecordings(storage, NODE).files()
    return {d.file: d for d in examine_marked(storage, NODE, files)}


def test_a_torn_recording_is_repaired_and_adopted_with_a_crash_cdr(tmp_path: Path) -> None:
    marker = started(retention=7)
    torn(leave(tmp_path, marker), 2.5)
    (decision,) = decide(tmp_path).values()
    assert decision.action == "adopt" and decision.marked and decision.repaired
    handle, cdr = decision.handle, decision.cdr
    assert handle is not None and cdr is not None
    assert handle.id == marker.call_id and handle.call_id == marker.call_id
    assert handle.duration == Decimal("2.500") and handle.node == NODE
    assert handle.path == str((tmp_path / "recordings" / marker.file).absolute())
    assert handle.created == cdr.end and handle.expires == cdr.end + timedelta(days=7)
    assert handle.sha256 == describe_wav(handle.path).sha256  # the repaired file's
    assert cdr.recording == marker.call_id and cdr.recording_error == "crash"
    assert cdr.end == marker.recording_start + timedelta(seconds=2.5)
    assert cdr.caller == "+31612345678" and cdr.number == "+31900123456"
    assert describe_wav(handle.path).duration == Decimal("2.500")  # the header counts it


def test_a_call_whose_cdr_is_journaled_gets_only_its_handle(tmp_path: Path) -> None:
    marker = started()
    write_wav(leave(tmp_path, marker), 1.0)
    ended = make_cdr("x", recording=marker.call_id)
    ended = Cdr(**{**{k: getattr(ended, k) for k in (
        "sip_call_id", "number", "owner", "caller", "target", "start", "answer", "end",
        "disposition", "sip_status", "hangup_by", "recording")}, "call_id": marker.call_id})
    with journal(tmp_path) as j:
        j.append([("cdr", ended.to_fields())])
    (decision,) = decide(tmp_path).values()
    assert decision.action == "adopt" and decision.cdr is None
    assert decision.handle is not None and decision.handle.created == ended.end


def test_a_recording_with_its_handle_journaled_only_loses_its_marker(tmp_path: Path) -> None:
    marker = started()
    path = write_wav(leave(tmp_path, marker), 1.0)
    handle = RecordingHandle.create(call_id=marker.call_id, number=marker.number,
                                    owner=marker.owner, path=path, facts=describe_wav(path),
                                    created=T0, retention_days=30, id=marker.call_id)
    with journal(tmp_path) as j:
        j.append([("recording", handle.to_fields())])
    (decision,) = decide(tmp_path).values()
    assert (decision.action, decision.reason, decision.cdr) == ("forget", "accounted", None)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no-file"), (b"", "unreadable"), (b"RIFF\x00\x00", "unreadable"),
    (b"this is no wav file at all", "unreadable"), ("header", "empty"),
])
def test_a_recording_with_nothing_in_it_goes_and_its_call_keeps_a_cdr(
        tmp_path: Path, content: bytes | str | None, reason: str) -> None:
    marker = started()
    path = leave(tmp_path, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "header":
        write_wav(path, 0.0)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    (decision,) = decide(tmp_path).values()
    assert decision.reason == reason and decision.handle is None
    assert decision.action == ("forget" if content is None else "destroy")
    assert decision.cdr is not None and decision.cdr.recording == ""
    assert decision.cdr.recording_error == "crash" and decision.cdr.duration == Decimal(0)


def test_a_voicemail_cut_by_a_crash_is_not_kept(tmp_path: Path) -> None:
    marker = started(kind="voicemail")
    torn(leave(tmp_path, marker), 4.0, channels=1)
    (decision,) = decide(tmp_path).values()
    assert (decision.action, decision.reason) == ("destroy", "voicemail")
    assert decision.cdr is not None and decision.cdr.disposition == "voicemail"
    assert decision.cdr.recording == "" and decision.handle is None


def test_a_recording_whose_marker_is_unreadable_is_destroyed(tmp_path: Path) -> None:
    markers = OpenRecordings(tmp_path, NODE)
    markers.directory.mkdir(parents=True)
    markers.path("eeee.wav").write_text("garbage")
    write_wav(tmp_path / "recordings" / "eeee.wav", 1.0)
    (decision,) = decide(tmp_path).values()
    assert (decision.action, decision.reason, decision.marked) == ("destroy", "unknown", True)


def test_a_recording_whose_retention_ended_is_destroyed(tmp_path: Path) -> None:
    marker = started()
    write_wav(leave(tmp_path, marker), 1.0)
    deleted = RecordingDeleted(id=marker.call_id, call_id=marker.call_id, reason="expired",
                               file="deleted", at=T0)
    with journal(tmp_path) as j:
        j.append([("recording-deleted", deleted.to_fields())])
    (decision,) = decide(tmp_path).values()
    assert (decision.action, decision.reason) == ("destroy", "expired")


# --- what the journal says, read fast ------------------------------------------------


def test_facts_come_from_carried_handles_and_recent_files_only(tmp_path: Path) -> None:
    directory = journal_dir(tmp_path, NODE)
    directory.mkdir(parents=True)
    wav = write_wav(tmp_path / "recordings" / "c1.wav", 0.1)

    def handle_line(name: str) -> str:
        handle = RecordingHandle.create(call_id=name, number="+31900123456", owner="acme",
                                        path=tmp_path / "recordings" / f"{name}.wav",
                                        facts=describe_wav(wav), created=T0,
                                        retention_days=30, id=name)
        return json.dumps({"type": "recording", "v": 1, "at": "x",
                           "data": handle.to_fields()}, separators=(",", ":")) + "\n"

    (directory / CARRIED).write_bytes(header_line(1) + handle_line("c1").encode())
    (directory / "journal-000001-20261101.jsonl").write_text(handle_line("old"))
    (directory / "journal-000002-20261120.jsonl").write_text(handle_line("mid"))
    (directory / "journal-000003-20261123.jsonl").write_text(
        handle_line("new") + '{"type":"cdr","v":1,"at":"x","data":{"call_id":"k"')  # torn
    files = {"c1.wav", "old.wav", "mid.wav", "new.wav"}
    since = datetime(2026, 11, 21, tzinfo=UTC).timestamp()
    assert read_facts(directory, files=files, since=since).handles == {
        "c1.wav", "mid.wav", "new.wav"}  # the file opened on the 20th runs into the 21st
    assert read_facts(directory, files=files).handles == files
    assert read_facts(directory, files={"new.wav"}).handles == {"new.wav"}


# --- unmarked recordings ---------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stray(storage: Path, name: str, mtime: float, seconds: float = 0.5) -> Path:
    path = write_wav(storage / "recordings" / name, seconds)
    os.utime(path, (mtime, mtime))
    return path


def scan_all(scan: UnmarkedScan) -> dict[str, Decision]:
    assert scan.begin()
    found: dict[str, Decision] = {}
    while (batch := scan.next_batch()) is not None:
        found.update((d.file, d) for d in batch)
    scan.finish()
    return found


def test_unmarked_files_nobody_knows_go_unless_written_or_marked(tmp_path: Path) -> None:
    now = T0.timestamp()
    stray(tmp_path, "unknown.wav", now - 3600)
    stray(tmp_path, "recent.wav", now - 10)  # maybe being written by an older mediacore
    stray(tmp_path, "sibling.wav", now - 3600)
    OpenRecordings(tmp_path, "core2").add(started("sibling", node="core2"))
    known = stray(tmp_path, "known.wav", now - 3600)
    handle = RecordingHandle.create(call_id="known", number="+31900123456", owner="acme",
                                    path=known, facts=describe_wav(known), created=T0,
                                    retention_days=30, id="known")
    with journal(tmp_path, "core2") as j:
        j.append([("recording", handle.to_fields())])
    stray(tmp_path, "billed.wav", now - 3600, seconds=1.5)
    billed = make_cdr("billed", recording="billed", number="+31900123456")
    with journal(tmp_path, "core3") as j:
        j.append([("cdr", billed.to_fields())])
    (tmp_path / "recordings" / "notes.txt").write_text("not a recording")

    scan = UnmarkedScan(tmp_path, NODE, retention_of=lambda number: 11, clock=Clock(now),
                        batch=2)
    found = scan_all(scan)
    assert sorted(found) == ["billed.wav", "unknown.wav"]
    assert (found["unknown.wav"].action, found["unknown.wav"].reason) == ("destroy", "unknown")
    assert found["unknown.wav"].unmarked
    adopted = found["billed.wav"]
    assert adopted.action == "adopt" and adopted.cdr is None and adopted.handle is not None
    assert adopted.handle.created == billed.end and adopted.handle.node == NODE
    assert adopted.handle.expires == billed.end + timedelta(days=11)
    assert adopted.handle.duration == Decimal("1.500")
    assert scan.kept == 1  # recent.wav: looked at again by the next scan


def test_the_next_scan_looks_only_at_what_changed_since(tmp_path: Path) -> None:
    now = T0.timestamp()
    stray(tmp_path, "old.wav", now - 7200)
    assert "old.wav" in scan_all(UnmarkedScan(tmp_path, NODE, retention_of=lambda n: 30,
                                              clock=Clock(now)))
    state = json.loads((tmp_path / "journal" / SCAN_STATE).read_text())
    assert state["since"] == now - 60 and state["node"] == NODE
    # A day later: the file still there (say its unlink failed) is not looked at again,
    # one written after the last scan is.
    stray(tmp_path, "later.wav", now + 3600)
    found = scan_all(UnmarkedScan(tmp_path, NODE, retention_of=lambda n: 30,
                                  clock=Clock(now + 86400)))
    assert sorted(found) == ["later.wav"]


def test_one_process_scans_at_a_time(tmp_path: Path) -> None:
    first = UnmarkedScan(tmp_path, NODE, retention_of=lambda n: 30)
    second = UnmarkedScan(tmp_path, "core2", retention_of=lambda n: 30)
    assert first.begin()
    assert not second.begin()
    first.abandon()
    assert second.begin()
    second.abandon()
    assert not (tmp_path / "journal" / SCAN_STATE).exists()  # an abandoned scan saves nothing


def test_an_unmarked_file_is_looked_at_again_just_before_it_goes(tmp_path: Path) -> None:
    now = T0.timestamp()
    clock = Clock(now)
    path = stray(tmp_path, "late.wav", now - 3600)
    decision = Decision("late.wav", "destroy", "unknown", unmarked=True)
    os.utime(path, (now - 5, now - 5))  # written meanwhile
    assert unlink_orphan(tmp_path, decision, clock=clock) == "kept"
    os.utime(path, (now - 3600, now - 3600))
    OpenRecordings(tmp_path, "core2").add(started("late", node="core2"))  # marked meanwhile
    assert unlink_orphan(tmp_path, decision, clock=clock) == "kept"
    OpenRecordings(tmp_path, "core2").discard("late.wav")
    assert unlink_orphan(tmp_path, decision, clock=clock) == "deleted"
    assert not path.exists()
    assert unlink_orphan(tmp_path, decision, clock=clock) == "missing"


def test_a_scan_is_due_only_while_a_mediacore_without_markers_may_have_left_files(
        tmp_path: Path) -> None:
    now = T0.timestamp()
    assert unmarked_scan_due(tmp_path, first_start=False) == "no scan finished yet"
    scan_all(UnmarkedScan(tmp_path, NODE, retention_of=lambda n: 30, clock=Clock(now)))
    OpenRecordings(tmp_path, NODE).ensure()
    assert unmarked_scan_due(tmp_path, first_start=False) is None  # the steady state
    assert unmarked_scan_due(tmp_path, first_start=True) == (
        "this node's first start with recording markers")
    # A node on an older mediacore: a journal, no marker directory.
    with journal(tmp_path, "core0") as j:
        j.append([("cdr", make_cdr("o", node="core0").to_fields())])
    os.utime(next(journal_dir(tmp_path, "core0").glob("journal-*")), (now, now))
    assert unmarked_scan_due(tmp_path, first_start=False) == (
        "node core0 journals without recording markers (older mediacore)")
    # ... that has not journaled since long before the last scan: not running.
    old = now - 86400
    os.utime(next(journal_dir(tmp_path, "core0").glob("journal-*")), (old, old))
    assert unmarked_scan_due(tmp_path, first_start=False) is None
    assert OpenRecordings(tmp_path, "core2").ensure() is True
    assert OpenRecordings(tmp_path, "core2").ensure() is False
    (tmp_path / "journal" / SCAN_STATE).write_text("{")
    assert unmarked_scan_due(tmp_path, first_start=False) == (
        "the last scan's state is unreadable")
