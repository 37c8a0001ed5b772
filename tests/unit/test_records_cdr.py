"""CDRs and recording handles: the contract's fields, formats and invariants."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import wave
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacore.records.cdr import CDR_FIELDS, Cdr
from mediacore.records.recordings import RecordingHandle, WavFacts, describe_wav
from mediacore.records.timefmt import format_seconds, format_utc, parse_seconds, parse_utc
from tests.integration.records_helpers import BASE, make_cdr, write_wav

CONTRACT = ["call_id", "sip_call_id", "number", "owner", "caller", "target", "start",
            "answer", "end", "duration", "disposition", "sip_status", "hangup_by",
            "recording", "node", "recording_error"]  # recording_error: contract 1.3


def test_fields_are_exactly_the_contract_in_order() -> None:
    assert list(CDR_FIELDS) == CONTRACT
    assert [f.name for f in dataclasses.fields(Cdr)] == CONTRACT
    assert list(make_cdr(1).to_fields()) == CONTRACT


def test_stream_entry_of_an_answered_call() -> None:
    start = datetime(2026, 11, 23, 15, 4, 11, 123987, tzinfo=UTC)
    cdr = Cdr(
        call_id="c1", sip_call_id="abc@carrier", number="+31900123456", owner="acme",
        caller="+31612345678", target="sip:+31201234567@127.0.0.1:5070", start=start,
        answer=start + timedelta(seconds=3, microseconds=500),
        end=start + timedelta(seconds=15, milliseconds=340, microseconds=999),
        disposition="answered", sip_status=200, hangup_by="callee", recording="r1", node="n1",
    )
    assert cdr.to_fields() == {
        "call_id": "c1", "sip_call_id": "abc@carrier", "number": "+31900123456",
        "owner": "acme", "caller": "+31612345678",
        "target": "sip:+31201234567@127.0.0.1:5070",
        "start": "2026-11-23T15:04:11.123Z", "answer": "2026-11-23T15:04:14.124Z",
        "end": "2026-11-23T15:04:26.464Z", "duration": "12.340",
        "disposition": "answered", "sip_status": "200", "hangup_by": "callee",
        "recording": "r1", "node": "n1", "recording_error": "",
    }
    assert cdr.duration == Decimal("12.340")


def test_unanswered_call_has_empty_answer_and_zero_duration() -> None:
    fields = make_cdr(2, answered=False, caller="anonymous").to_fields()
    assert fields["answer"] == ""
    assert fields["duration"] == "0.000"
    assert fields["caller"] == "anonymous"  # stored as given by the call layer


def test_times_are_converted_to_utc() -> None:
    plus_one = timezone(timedelta(hours=1))
    start = datetime(2026, 11, 23, 16, 0, 0, tzinfo=plus_one)
    cdr = dataclasses.replace(make_cdr(3), start=start, answer=None,
                              end=start + timedelta(seconds=1), disposition="busy",
                              sip_status=486)
    assert cdr.to_fields()["start"] == "2026-11-23T15:00:00.000Z"
    assert cdr.start.tzinfo == UTC


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"disposition": "hung-up"}, "disposition"),
        ({"hangup_by": "nobody"}, "hangup_by"),
        ({"sip_status": 99}, "sip_status"),
        ({"sip_status": True}, "sip_status"),
        ({"call_id": ""}, "call_id"),
        ({"start": datetime(2026, 11, 23, 15, 0)}, "time zone"),
        ({"end": BASE - timedelta(seconds=1)}, "before start"),
        ({"answer": BASE + timedelta(hours=1)}, "not between"),
        ({"answer": None}, "needs an answer"),
    ],
)
def test_bad_cdrs_are_refused_when_made(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(make_cdr(4), **change)


def test_json_and_stream_round_trips() -> None:
    cdr = make_cdr(5, recording="rec-5")
    assert Cdr.from_json(cdr.to_json()) == cdr
    as_bytes = {k.encode(): v.encode() for k, v in cdr.to_fields().items()}
    assert Cdr.from_fields(as_bytes) == cdr
    assert json.loads(cdr.to_json()) == cdr.to_fields()


def test_a_tampered_duration_is_refused() -> None:
    fields = make_cdr(6).to_fields()
    fields["duration"] = "99.000"
    with pytest.raises(ValueError, match="does not match"):
        Cdr.from_fields(fields)
    del fields["node"]
    with pytest.raises(ValueError, match="lacks node"):
        Cdr.from_fields(fields)


@given(
    start_ms=st.integers(0, 10**12),
    ring_ms=st.integers(0, 10**6),
    talk_ms=st.integers(0, 10**8),
)
def test_duration_always_equals_printed_end_minus_answer(
    start_ms: int, ring_ms: int, talk_ms: int
) -> None:
    start = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(milliseconds=start_ms,
                                                         microseconds=start_ms % 1000)
    cdr = dataclasses.replace(make_cdr(7), start=start,
                              answer=start + timedelta(milliseconds=ring_ms),
                              end=start + timedelta(milliseconds=ring_ms + talk_ms))
    fields = cdr.to_fields()
    printed = parse_utc(fields["end"]) - parse_utc(fields["answer"])
    assert parse_seconds(fields["duration"]) == Decimal(printed.total_seconds()).quantize(
        Decimal("0.001"))
    assert Cdr.from_fields(fields) == cdr


def test_time_formats() -> None:
    assert format_utc(datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == \
        "2026-01-02T03:04:05.006Z"
    assert format_utc(None) == ""
    # Another zone is converted, sub-milliseconds are cut (not rounded), years padded.
    assert format_utc(datetime(2026, 1, 2, 5, 4, 5, 6999, tzinfo=timezone(timedelta(hours=2)))) \
        == "2026-01-02T03:04:05.006Z"
    assert format_utc(datetime(987, 6, 5, 4, 3, 2, tzinfo=UTC)) == "0987-06-05T04:03:02.000Z"
    with pytest.raises(ValueError, match="no time zone"):
        format_utc(datetime(2026, 1, 2, 3, 4, 5))
    assert format_seconds(0) == "0.000"
    assert format_seconds(7_200_000) == "7200.000"
    with pytest.raises(ValueError):
        parse_seconds("1.0005")
    with pytest.raises(ValueError):
        parse_utc("yesterday")


def _facts() -> WavFacts:
    return WavFacts("wav", 8000, 2, Decimal("12.340"), 197_484, "ab" * 32)


def test_recording_expiry_is_created_plus_the_numbers_retention() -> None:
    handle = RecordingHandle.create(call_id="c1", number="+3190", owner="acme",
                                    path="/var/rec/r1.wav", facts=_facts(), created=BASE,
                                    retention_days=30, id="r1", node="n1")
    assert handle.expires == BASE + timedelta(days=30)
    assert handle.expires_unix == round((BASE + timedelta(days=30)).timestamp(), 3)
    fields = handle.to_fields()
    assert list(fields)[:14] == ["id", "call_id", "number", "owner", "kind", "path", "format",
                                 "sample_rate", "channels", "duration", "bytes", "sha256",
                                 "created", "expires"]
    assert fields["kind"] == "call" and fields["duration"] == "12.340"
    assert fields["expires"] == "2026-12-23T15:04:11.123Z"
    assert RecordingHandle.from_fields(fields) == handle


def test_voicemail_handles_keep_no_path() -> None:
    handle = RecordingHandle.voicemail(call_id="c2", number="+3190", owner="acme",
                                       facts=_facts(), created=BASE,
                                       delivered=BASE + timedelta(minutes=1), retention_days=7)
    assert handle.kind == "voicemail" and handle.path == ""
    assert handle.to_fields()["delivered"] == "2026-11-23T15:05:11.123Z"
    with pytest.raises(ValueError, match="no path"):
        dataclasses.replace(handle, path="/tmp/vm.wav")
    with pytest.raises(ValueError, match="recording id"):
        dataclasses.replace(handle, id="a:b")


def test_describe_wav_reads_header_size_and_hash(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "r.wav", seconds=1.5, channels=2)
    facts = describe_wav(path)
    with wave.open(str(path)) as reader:
        assert (facts.sample_rate, facts.channels) == (reader.getframerate(),
                                                       reader.getnchannels())
    assert facts.format == "wav"
    assert facts.duration == Decimal("1.500")
    assert facts.bytes == path.stat().st_size

    assert facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    with pytest.raises(ValueError, match="not a WAV"):
        describe_wav(text)
