"""Voicemail end to end: the target is busy, mediacore answers, greets, beeps,
records the caller's audio and mails it to the owner, then keeps nothing.

Real processes and servers on loopback: mediacore serve, SIPp as the carrier's
caller (g711a.pcap) and as a busy target, an aiosmtpd SMTP server in this
process.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import soundfile
from aiosmtpd.controller import Controller

from tests.support.ports import free_port
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SCENARIOS, call_with_pcap, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


class Inbox:
    """An SMTP handler that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=default_policy))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def busy_target(sipp_binary: str) -> Iterator[int]:
    port = free_sip_port()
    with sipp_in_background(sipp_binary, ["-sf", str(SCENARIOS / "callee_busy.xml"),
                                          "-i", "127.0.0.1", "-p", str(port), "-m", "1"]):
        yield port


def test_busy_target_gives_a_voicemail_delivered_by_mail_and_not_kept(
    tmp_path: Path, sipp_binary: str, inbox: tuple[Inbox, int], busy_target: int
) -> None:
    mailbox, smtp_port = inbox
    sip_port = free_sip_port()
    storage = tmp_path / "var"
    server = MediacoreServer(tmp_path, f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [40200, 40399]
[storage]
dir = "{storage}"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
starttls = "off"
sender = "voicemail@mediacore.test"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{busy_target}"]
voicemail_email = "owner@acme.test"
""", sip_port)
    server.start()
    try:
        # Greeting (4.9 s) and beep (0.3 s), then about 3 s of message.
        result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                server_port=sip_port, workdir=tmp_path / "sipp",
                                hold_ms=8500, local_port=free_sip_port())
        assert result.returncode == 0, result.stdout + result.stderr + server.log
        server.wait_for_log(": CDR ")
        deadline = time.monotonic() + 20
        while not mailbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert server.stop() == 0, server.log
    cdr = json.loads(re.findall(r": CDR (\{.*\})", server.log)[0])
    assert cdr["disposition"] == "voicemail" and cdr["caller"] == "+31612345678"
    (mail,) = mailbox.messages
    assert mail["To"] == "owner@acme.test"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None and SERVICE in body.get_content()
    (attachment,) = list(mail.iter_attachments())
    assert attachment.get_content_type() == "audio/wav"
    audio, rate = soundfile.read(io.BytesIO(attachment.get_content()), dtype="int16")
    assert rate == 8000 and audio.ndim == 1 and len(audio) / rate > 1.0
    # Voicemail is not kept: no WAV left in recordings/ or in the spool.
    assert not list(storage.rglob("*.wav")), list(storage.rglob("*"))
    # ... and its marker went once it was spooled (records/open_recordings.py).
    assert not list(storage.rglob("*.wav.json")), list(storage.rglob("*"))
