"""Voicemail e-mail and spool, without a network (mediacore.calls.voicemail).

Delivery against real SMTP servers is in tests/integration/test_voicemail_smtp.py.
"""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacore.calls.voicemail import (
    FAILED_DIRNAME,
    VoicemailSender,
    attachment_name,
    backoff_delay,
    compose,
    recover_spool,
    spool_dir_for,
    spool_message,
)
from mediacore.config import SmtpConfig

AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4
WHEN = datetime(2026, 3, 3, 15, 5, 9, tzinfo=timezone(timedelta(hours=1)))  # 14:05:09 UTC


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "recordings" / "vm-1.wav"
    path.parent.mkdir()
    path.write_bytes(AUDIO)
    return path


def make(wav: Path, caller: str = "+31201234567", **changes: object) -> EmailMessage:
    fields: dict[str, object] = {
        "caller": caller, "number": "+31900123456", "owner": "acme", "received_at": WHEN,
        "duration": 83.4, "sender": "voicemail@example.net", "recipient": "owner@example.com",
    }
    fields.update(changes)
    return compose(wav, **fields)  # type: ignore[arg-type]


def reparse(message: EmailMessage) -> EmailMessage:
    parsed = message_from_bytes(message.as_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- compose ------------------------------------------------------------------------------


def test_compose_carries_the_call_and_the_audio(wav: Path) -> None:
    message = reparse(make(wav))
    assert message["From"] == "voicemail@example.net"
    assert message["To"] == "owner@example.com"
    assert message["Subject"] == "Voicemail for +31900123456 from +31201234567"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@example.net>")
    assert message["Date"].datetime == WHEN
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    for expected in ("+31201234567", "+31900123456", "acme", "2026-03-03T14:05:09Z",
                     "Tuesday 3 March 2026, 14:05:09 UTC", "1 min 23 s", "83.4 seconds"):
        assert expected in text
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "audio/wav"
    assert attachment.get_filename() == "voicemail-31900123456-20260303T140509Z.wav"
    assert attachment.get_content() == AUDIO


def test_a_withheld_caller_is_anonymous_everywhere(wav: Path) -> None:
    message = make(wav, caller="anonymous")
    raw = message.as_bytes()
    assert b"1234567" not in raw.replace(b"31900123456", b"")
    parsed = reparse(message)
    assert parsed["Subject"] == "Voicemail for +31900123456 from anonymous"
    body = parsed.get_body(("plain",))
    assert body is not None and "anonymous (number withheld)" in body.get_content()


def test_a_caller_without_a_number(wav: Path) -> None:
    parsed = reparse(make(wav, caller=""))
    assert parsed["Subject"] == "Voicemail for +31900123456 from unknown"


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
       st.datetimes(timezones=st.just(UTC)))
def test_the_attachment_name_is_the_service_number_and_time(number: str,
                                                            moment: datetime) -> None:
    name = attachment_name(number, moment)
    assert name == f"voicemail-{number[1:]}-{moment:%Y%m%dT%H%M%SZ}.wav"
    assert "/" not in name and " " not in name


def test_the_time_must_be_aware(wav: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        make(wav, received_at=datetime(2026, 3, 3, 14, 5, 9))


@pytest.mark.parametrize("field", ["caller", "number", "owner", "call_id"])
def test_header_injection_is_refused(wav: Path, field: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        make(wav, **{field: "x\r\nBcc: someone@example.org"})


def test_short_durations_read_naturally(wav: Path) -> None:
    body = reparse(make(wav, duration=7.2)).get_body(("plain",))
    assert body is not None and "Duration:  7 s (7.2 seconds)" in body.get_content()


# --- the spool ----------------------------------------------------------------------------


def test_spooling_moves_the_audio_in_next_to_the_message(tmp_path: Path, wav: Path) -> None:
    spool = spool_dir_for(tmp_path / "var")
    assert spool == tmp_path / "var" / "voicemail-spool"
    message = make(wav)
    job_id = spool_message(spool, message, wav)
    assert not wav.exists()
    assert sorted(p.name for p in spool.iterdir()) == sorted(
        [f"{job_id}.eml", f"{job_id}.wav", FAILED_DIRNAME])
    assert (spool / f"{job_id}.wav").read_bytes() == AUDIO
    stored = message_from_bytes((spool / f"{job_id}.eml").read_bytes(), policy=default_policy)
    assert stored["Message-ID"] == message["Message-ID"]
    assert b"\r\n" in (spool / f"{job_id}.eml").read_bytes()  # SMTP line endings
    for path in (spool, spool / f"{job_id}.eml", spool / f"{job_id}.wav"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, oct(mode)


def test_spooling_gives_a_message_id_when_missing(tmp_path: Path, wav: Path) -> None:
    message = make(wav)
    del message["Message-ID"]
    spool_message(tmp_path / "spool", message, wav)
    assert message["Message-ID"].endswith("@example.net>")


def test_a_missing_wav_spools_nothing(tmp_path: Path, wav: Path) -> None:
    message = make(wav)
    spool = tmp_path / "spool"
    with pytest.raises(FileNotFoundError):
        spool_message(spool, message, tmp_path / "gone.wav")
    assert [p.name for p in spool.iterdir()] == [FAILED_DIRNAME]


def test_ids_sort_oldest_first_and_recovery_keeps_queued_messages(tmp_path: Path,
                                                                   wav: Path) -> None:
    spool = tmp_path / "spool"
    ids = []
    for index in range(3):
        path = tmp_path / f"vm-{index}.wav"
        path.write_bytes(AUDIO)
        ids.append(spool_message(spool, make(wav), path))
    assert recover_spool(spool) == sorted(ids)
    assert len(set(ids)) == 3


def test_recovery_finishes_or_undoes_interrupted_work(tmp_path: Path, wav: Path) -> None:
    spool = tmp_path / "spool"
    done = spool_message(spool, make(wav), wav)
    eml = (spool / f"{done}.eml").read_bytes()
    # crashed after moving the audio, before the final rename: finish it
    (spool / "a.eml.tmp").write_bytes(eml)
    (spool / "a.wav").write_bytes(AUDIO)
    # crashed before moving the audio: the message was never queued
    (spool / "b.eml.tmp").write_bytes(eml[:100])
    # crashed copying audio across filesystems
    (spool / "c.eml.tmp").write_bytes(eml)
    (spool / "c.wav.tmp").write_bytes(AUDIO[:10])
    # crashed between deleting a delivered message and its audio
    (spool / "d.wav").write_bytes(AUDIO)
    assert recover_spool(spool) == sorted([done, "a"])
    assert sorted(p.name for p in spool.iterdir()) == sorted(
        [f"{done}.eml", f"{done}.wav", "a.eml", "a.wav", FAILED_DIRNAME])
    assert (spool / "a.eml").read_bytes() == eml


def test_recovery_leaves_failed_messages_alone(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / FAILED_DIRNAME).mkdir(parents=True)
    (spool / FAILED_DIRNAME / "x.eml").write_bytes(b"x")
    (spool / FAILED_DIRNAME / "x.wav").write_bytes(b"x")
    assert recover_spool(spool) == []
    assert sorted(os.listdir(spool / FAILED_DIRNAME)) == ["x.eml", "x.wav"]


# --- backoff and construction -------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    def delays(jitter: float, rand: float) -> list[float]:
        return [backoff_delay(n, 10.0, 3600.0, jitter, lambda: rand) for n in range(1, 12)]

    assert delays(0.0, 0.5) == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert delays(0.2, 0.0)[0] == pytest.approx(8.0)
    assert delays(0.2, 1.0)[-1] == pytest.approx(4320.0)
    assert backoff_delay(10_000, 10.0, 3600.0, 0.0) == 3600.0


@given(st.integers(1, 200), st.floats(0, 0.99), st.floats(0, 1))
def test_backoff_stays_within_its_jitter(attempt: int, jitter: float, rand: float) -> None:
    delay = backoff_delay(attempt, 10.0, 3600.0, jitter, lambda: rand)
    base = min(3600.0, 10.0 * 2 ** (attempt - 1))
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


@pytest.mark.parametrize("kwargs", [
    {"retry_initial": 0.0}, {"retry_initial": 20.0, "retry_max": 10.0},
    {"retry_jitter": 1.0}, {"retry_jitter": -0.1},
])
def test_sender_checks_its_parameters(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VoicemailSender(SmtpConfig(), tmp_path, **kwargs)  # type: ignore[arg-type]


def test_sender_checks_the_starttls_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="starttls"):
        VoicemailSender(SmtpConfig(starttls="sometimes"), tmp_path)


def test_a_missing_ca_file_is_an_error_at_once(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        VoicemailSender(SmtpConfig(), tmp_path, ca_file=tmp_path / "missing.pem")


def test_submit_needs_start(tmp_path: Path, wav: Path) -> None:
    sender = VoicemailSender(SmtpConfig(), tmp_path / "spool")
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(sender.submit(make(wav), wav))
    assert wav.exists()


# --- one spool per node ------------------------------------------------------------------


def test_each_node_has_its_own_spool(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    assert spool_dir_for(storage, "core1") == storage / "voicemail-spool" / "core1"
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            spool_dir_for(storage, bad)


def test_a_second_sender_on_one_spool_is_refused(tmp_path: Path) -> None:
    from mediacore.calls.voicemail import SpoolInUse

    spool = spool_dir_for(tmp_path / "var", "core1")

    async def scenario() -> str:
        first = VoicemailSender(SmtpConfig(), spool)
        await first.start()
        try:
            with pytest.raises(SpoolInUse) as refused:
                await VoicemailSender(SmtpConfig(), spool).start()
            other = VoicemailSender(SmtpConfig(), spool_dir_for(tmp_path / "var", "core2"))
            await other.start()  # another node's spool: fine
            await other.close()
        finally:
            await first.close()
        again = VoicemailSender(SmtpConfig(), spool)  # released at close
        await again.start()
        await again.close()
        return str(refused.value)

    assert "records.node" in asyncio.run(scenario())


def test_a_flat_spool_is_taken_over_by_the_first_node(tmp_path: Path, wav: Path) -> None:
    from mediacore.calls.voicemail import adopt_flat_spool

    flat = spool_dir_for(tmp_path / "var")
    job_id = spool_message(flat, make(wav), wav)
    node_spool = spool_dir_for(tmp_path / "var", "core1")
    assert adopt_flat_spool(node_spool) == [job_id]
    assert recover_spool(node_spool) == [job_id]
    assert (node_spool / f"{job_id}.wav").read_bytes() == AUDIO
    assert recover_spool(flat) == []
    assert adopt_flat_spool(spool_dir_for(tmp_path / "var", "core2")) == []
