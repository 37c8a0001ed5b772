"""The call detail record: one per call that reached call control.

Its fields are the contract of the ``<prefix>:cdr`` stream (docs/contracts.md)
and nothing more, because every field is a promise to billing and to the
privacy statement (a withheld caller is ``anonymous`` here, decided by the
call layer). A ``Cdr`` is validated when it is made, so a bad one fails in
the call layer's code, loudly, and never half-way into the journal.

The billable ``duration`` is not passed in: it is computed from ``answer``
and ``end`` (both cut to the millisecond), so it always equals the printed
difference and cannot disagree with the timestamps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from mediacore.records.timefmt import (
    format_seconds,
    format_utc,
    millis,
    parse_seconds,
    parse_utc,
    to_utc_ms,
)

__all__ = ["CDR_FIELDS", "DISPOSITIONS", "HANGUP_BY", "Cdr"]

DISPOSITIONS = ("answered", "no-answer", "busy", "failed", "cancelled", "voicemail", "rejected")
HANGUP_BY = ("caller", "callee", "system")
CDR_FIELDS = (
    "call_id", "sip_call_id", "number", "owner", "caller", "target", "start", "answer",
    "end", "duration", "disposition", "sip_status", "hangup_by", "recording", "node",
    "recording_error",
)
#: Fields a reader does without (records journaled before they existed): their defaults.
OPTIONAL_FIELDS = {"recording_error": ""}
#: ``recording_error`` is a short stable word (mediacore.diskspace.REASONS): a
#: lowercase token, so that a reason added later still reads in an older version.
_REASON = re.compile(r"[a-z][a-z-]{0,31}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Cdr:
    """One finished call. Times are aware datetimes; they are kept in UTC, to the ms."""

    call_id: str
    sip_call_id: str
    number: str
    owner: str
    caller: str
    target: str
    start: datetime
    answer: datetime | None
    end: datetime
    duration: Decimal = field(init=False)
    disposition: str
    sip_status: int
    hangup_by: str
    recording: str = ""
    node: str = ""
    #: Empty, or why the call's recording is missing or cut short (the disk
    #: failed: ``disk-full``, ``read-only``, ``no-permission``, ``io-error``...).
    recording_error: str = ""

    def __post_init__(self) -> None:
        for name in ("call_id", "sip_call_id", "number", "owner", "caller", "target",
                     "disposition", "hangup_by", "recording", "node", "recording_error"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Cdr.{name} must be a string, got "
                                f"{type(getattr(self, name)).__name__}")
        if not self.call_id:
            raise ValueError("Cdr.call_id must not be empty")
        if self.recording_error and not _REASON.fullmatch(self.recording_error):
            raise ValueError(f"Cdr.recording_error {self.recording_error!r} is not a short "
                             "lowercase reason")
        if self.disposition not in DISPOSITIONS:
            raise ValueError(f"Cdr.disposition {self.disposition!r} is not one of "
                             f"{', '.join(DISPOSITIONS)}")
        if self.hangup_by not in HANGUP_BY:
            raise ValueError(f"Cdr.hangup_by {self.hangup_by!r} is not one of "
                             f"{', '.join(HANGUP_BY)}")
        if (not isinstance(self.sip_status, int) or isinstance(self.sip_status, bool)
                or not 100 <= self.sip_status <= 699):
            raise ValueError(f"Cdr.sip_status {self.sip_status!r} is not a SIP status code")
        start = to_utc_ms(self.start)
        end = to_utc_ms(self.end)
        answer = None if self.answer is None else to_utc_ms(self.answer)
        if end < start:
            raise ValueError(f"Cdr {self.call_id}: end {format_utc(end)} is before start "
                             f"{format_utc(start)}")
        if answer is not None and not start <= answer <= end:
            raise ValueError(f"Cdr {self.call_id}: answer {format_utc(answer)} is not between "
                             f"start and end")
        if self.disposition == "answered" and answer is None:
            raise ValueError(f"Cdr {self.call_id}: disposition 'answered' needs an answer time")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "answer", answer)
        billable = 0 if answer is None else millis(end - answer)
        object.__setattr__(self, "duration", Decimal(billable).scaleb(-3))

    def to_fields(self) -> dict[str, str]:
        """The ``<prefix>:cdr`` stream entry: every contract field, as strings, in order."""
        return {
            "call_id": self.call_id,
            "sip_call_id": self.sip_call_id,
            "number": self.number,
            "owner": self.owner,
            "caller": self.caller,
            "target": self.target,
            "start": format_utc(self.start),
            "answer": format_utc(self.answer),
            "end": format_utc(self.end),
            "duration": format_seconds(int(self.duration.scaleb(3))),
            "disposition": self.disposition,
            "sip_status": str(self.sip_status),
            "hangup_by": self.hangup_by,
            "recording": self.recording,
            "node": self.node,
            "recording_error": self.recording_error,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> Cdr:
        """A CDR back from a stream entry or a journal line (str or bytes keys/values).

        The stored ``duration`` must equal the one the times give: a mismatch
        means the record was altered, and is refused rather than re-billed.
        """
        data = {**OPTIONAL_FIELDS, **{as_text(k): as_text(v) for k, v in fields.items()}}
        missing = [name for name in CDR_FIELDS if name not in data]
        if missing:
            raise ValueError(f"CDR lacks {', '.join(missing)}")
        try:
            sip_status = int(data["sip_status"])
        except ValueError:
            raise ValueError(f"CDR sip_status {data['sip_status']!r} is not a number") from None
        cdr = cls(
            call_id=data["call_id"],
            sip_call_id=data["sip_call_id"],
            number=data["number"],
            owner=data["owner"],
            caller=data["caller"],
            target=data["target"],
            start=parse_utc(data["start"]),
            answer=parse_utc(data["answer"]) if data["answer"] else None,
            end=parse_utc(data["end"]),
            disposition=data["disposition"],
            sip_status=sip_status,
            hangup_by=data["hangup_by"],
            recording=data["recording"],
            node=data["node"],
            recording_error=data["recording_error"],
        )
        if parse_seconds(data["duration"]) != cdr.duration:
            raise ValueError(f"CDR {cdr.call_id}: duration {data['duration']} does not match "
                             f"answer to end ({cdr.to_fields()['duration']})")
        return cdr

    def to_json(self) -> str:
        """The stream entry as one JSON object (the journal and ``--format json`` use it)."""
        return json.dumps(self.to_fields(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Cdr:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a CDR in JSON is an object")
        return cls.from_fields(data)


def as_text(value: Any) -> str:
    """Redis hands back bytes, the journal str: both read the same."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")
