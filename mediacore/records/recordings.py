"""Recording handles: what downstream knows about an audio file, and when it must go.

A handle is made once the recording is finished (its size and hash are
final) and carries its own expiry, ``created + retention_days`` of the
number *at the time of the call*: changing a number's retention later does
not move the end of recordings already made, which is what the owner was
promised when they were made.

Voicemail is sent to the owner by e-mail and not kept (DESIGN.md promise
3), so its handle records the delivery (``kind = "voicemail"``, an empty
``path``, ``delivered``) and no file is ever swept for it; the handle
itself expires like a call recording's, so the metadata does not outlive
the owner's retention either.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from mediacore.records.cdr import as_text as _text
from mediacore.records.timefmt import (
    format_seconds,
    format_utc,
    parse_seconds,
    parse_utc,
    to_utc_ms,
)

__all__ = [
    "FORMATS",
    "HANDLE_FIELDS",
    "KINDS",
    "RecordingDeleted",
    "RecordingHandle",
    "WavFacts",
    "describe_wav",
    "new_recording_id",
]

KINDS = ("call", "voicemail")
# "wav" is the contract's recording (16-bit PCM); G.711 kept as is in WAV.
FORMATS = {1: "wav", 7: "wav-ulaw", 6: "wav-alaw"}
HANDLE_FIELDS = (
    "id", "call_id", "number", "owner", "kind", "path", "format", "sample_rate", "channels",
    "duration", "bytes", "sha256", "created", "expires", "node", "delivered",
)
DELETED_FIELDS = ("id", "call_id", "reason", "file", "at", "node")


def new_recording_id() -> str:
    """A fresh id: 32 hex digits, safe in a Redis key and a file name."""
    return uuid.uuid4().hex


def _check_id(value: str, what: str) -> None:
    if not value or any(c in value for c in ":/\\ \t\r\n") or value in (".", ".."):
        raise ValueError(f"{what} {value!r} must be non-empty, without ':', '/', spaces")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingHandle:
    """The ``<prefix>:recording:<id>`` hash, plus where it goes in the expiry set."""

    id: str
    call_id: str
    number: str
    owner: str
    kind: str
    path: str
    format: str
    sample_rate: int
    channels: int
    duration: Decimal
    bytes: int
    sha256: str
    created: datetime
    expires: datetime
    node: str = ""
    delivered: datetime | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "recording id")
        if self.kind not in KINDS:
            raise ValueError(f"recording kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "voicemail" and self.path:
            raise ValueError("a voicemail handle keeps no path: the message is not kept")
        if self.kind == "call" and not self.path:
            raise ValueError(f"recording {self.id}: a call recording needs its path")
        for name in ("sample_rate", "channels", "bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"recording {self.id}: {name} must be a non-negative integer")
        duration = self.duration
        if not isinstance(duration, Decimal):
            duration = Decimal(str(duration))
        object.__setattr__(self, "duration", duration.quantize(Decimal("0.001")))
        created = to_utc_ms(self.created)
        expires = to_utc_ms(self.expires)
        if expires < created:
            raise ValueError(f"recording {self.id}: expires before it was created")
        object.__setattr__(self, "created", created)
        object.__setattr__(self, "expires", expires)
        if self.delivered is not None:
            object.__setattr__(self, "delivered", to_utc_ms(self.delivered))

    @classmethod
    def create(
        cls,
        *,
        call_id: str,
        number: str,
        owner: str,
        path: str | os.PathLike[str],
        facts: WavFacts,
        created: datetime,
        retention_days: int,
        id: str | None = None,
        node: str = "",
    ) -> RecordingHandle:
        """A call recording's handle; ``retention_days`` is the number's, now.

        ``path`` is made absolute: the sweeper and ``cdr export`` run in
        other processes and other working directories.
        """
        if retention_days < 0:
            raise ValueError("retention_days must not be negative")
        created = to_utc_ms(created)
        return cls(
            id=id or new_recording_id(), call_id=call_id, number=number, owner=owner,
            kind="call", path=str(Path(path).absolute()), format=facts.format,
            sample_rate=facts.sample_rate, channels=facts.channels, duration=facts.duration,
            bytes=facts.bytes, sha256=facts.sha256, created=created,
            expires=created + timedelta(days=retention_days), node=node,
        )

    @classmethod
    def voicemail(
        cls,
        *,
        call_id: str,
        number: str,
        owner: str,
        delivered: datetime,
        retention_days: int,
        created: datetime | None = None,
        facts: WavFacts | None = None,
        bytes: int | None = None,
        id: str | None = None,
        node: str = "",
    ) -> RecordingHandle:
        """The record of a voicemail delivered by e-mail: no path, nothing kept.

        Without ``facts`` (the file is gone by the time delivery is known)
        the handle says what is known: mono 8 kHz WAV, ``bytes`` as sent,
        duration ``0.000`` and an empty ``sha256`` for "not measured".
        """
        if retention_days < 0:
            raise ValueError("retention_days must not be negative")
        if facts is None:
            facts = WavFacts("wav", 8000, 1, Decimal("0.000"), bytes or 0, "")
        created = to_utc_ms(created or delivered)
        return cls(
            id=id or new_recording_id(), call_id=call_id, number=number, owner=owner,
            kind="voicemail", path="", format=facts.format, sample_rate=facts.sample_rate,
            channels=facts.channels, duration=facts.duration,
            bytes=facts.bytes if bytes is None else bytes, sha256=facts.sha256,
            created=created, expires=created + timedelta(days=retention_days), node=node,
            delivered=delivered,
        )

    @property
    def expires_unix(self) -> float:
        """The score in ``<prefix>:recordings:expiry``: Unix time, to the millisecond."""
        return round(self.expires.timestamp(), 3)

    def to_fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "number": self.number,
            "owner": self.owner,
            "kind": self.kind,
            "path": self.path,
            "format": self.format,
            "sample_rate": str(self.sample_rate),
            "channels": str(self.channels),
            "duration": format_seconds(int(self.duration.scaleb(3))),
            "bytes": str(self.bytes),
            "sha256": self.sha256,
            "created": format_utc(self.created),
            "expires": format_utc(self.expires),
            "node": self.node,
            "delivered": format_utc(self.delivered),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> RecordingHandle:
        data = {_text(k): _text(v) for k, v in fields.items()}
        missing = [name for name in HANDLE_FIELDS[:14] if name not in data]
        if missing:
            raise ValueError(f"recording handle lacks {', '.join(missing)}")
        try:
            return cls(
                id=data["id"], call_id=data["call_id"], number=data["number"],
                owner=data["owner"], kind=data["kind"], path=data["path"],
                format=data["format"], sample_rate=int(data["sample_rate"]),
                channels=int(data["channels"]), duration=parse_seconds(data["duration"]),
                bytes=int(data["bytes"]), sha256=data["sha256"],
                created=parse_utc(data["created"]), expires=parse_utc(data["expires"]),
                node=data.get("node", ""),
                delivered=parse_utc(data["delivered"]) if data.get("delivered") else None,
            )
        except ValueError as error:
            raise ValueError(f"recording handle {data.get('id')!r}: {error}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingDeleted:
    """A recording destroyed by the sweeper; becomes ``{event: deleted, ...}`` downstream.

    ``file`` says what happened on disk: ``deleted``, ``missing`` (already
    gone, which is not an error) or ``none`` (a voicemail, nothing kept).
    """

    id: str
    call_id: str
    reason: str
    file: str
    at: datetime
    node: str = ""

    def to_fields(self) -> dict[str, str]:
        return {"id": self.id, "call_id": self.call_id, "reason": self.reason,
                "file": self.file, "at": format_utc(self.at), "node": self.node}

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> RecordingDeleted:
        data = {_text(k): _text(v) for k, v in fields.items()}
        return cls(id=data["id"], call_id=data.get("call_id", ""),
                   reason=data.get("reason", ""), file=data.get("file", ""),
                   at=parse_utc(data["at"]), node=data.get("node", ""))


@dataclass(frozen=True, slots=True)
class WavFacts:
    """What a handle says about a file: from its header, its size and its hash."""

    format: str
    sample_rate: int
    channels: int
    duration: Decimal
    bytes: int
    sha256: str


_CHUNK = struct.Struct("<4sI")
_FMT = struct.Struct("<HHIIHH")


def describe_wav(path: str | os.PathLike[str]) -> WavFacts:
    """Read a finished WAV's header and hash the whole file.

    Hashing reads every byte (about a second per GB): call it in a worker
    thread (``asyncio.to_thread``), never on the event loop. The duration is
    taken from the ``data`` bytes actually present, so a file whose header
    was left short by a crash is described by what it holds.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
        tag = channels = rate = block_align = 0
        data_bytes = None
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{os.fspath(path)} is not a WAV (RIFF/WAVE) file")
        pos = 12
        while pos + 8 <= len(head):
            chunk_id, chunk_size = _CHUNK.unpack_from(head, pos)
            if chunk_id == b"fmt " and pos + 8 + _FMT.size <= len(head):
                tag, channels, rate, _, block_align, _ = _FMT.unpack_from(head, pos + 8)
            elif chunk_id == b"data":
                data_bytes = chunk_size
                data_start = pos + 8
                break
            pos += 8 + chunk_size + (chunk_size & 1)
        digest.update(head)
        size += len(head)
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    if not rate or not block_align or data_bytes is None:
        raise ValueError(f"{os.fspath(path)}: no fmt or data chunk in the WAV header")
    data_bytes = min(data_bytes, size - data_start)
    frames = data_bytes // block_align
    return WavFacts(
        format=FORMATS.get(tag, f"wav-{tag}"), sample_rate=rate, channels=channels,
        duration=(Decimal(frames * 1000 // rate)).scaleb(-3), bytes=size,
        sha256=digest.hexdigest(),
    )
