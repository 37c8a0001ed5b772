"""How the server's log lines look: plain text (the default) or one JSON object a line.

Every line about a call starts ``call <id>: ...`` (docs/contracts.md,
"Logs"), with our call id, or ``-`` before a call exists. The JSON form
lifts that id into a field of its own, so that a log shipper (journald's
export, Loki, Elasticsearch) can select one call's lines without a regex of
its own; the message keeps its text without the prefix.

What the lines hold is the callers' business as much as the operator's: at
INFO and above no caller number, no withheld-caller data and no whole CDR
is logged (the CDR belongs to the journal and Redis). The call plane keeps
to that; this module only shapes the lines.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["TEXT_FORMAT", "JsonFormatter", "configure", "split_call_id"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_CALL_PREFIX = re.compile(r"call (\S+): ")


def split_call_id(message: str) -> tuple[str | None, str]:
    """``"call 4f2a: bridged"`` -> ``("4f2a", "bridged")``; other lines keep their text.

    The ``-`` of a line before a call exists is no call id: it gives None.
    """
    match = _CALL_PREFIX.match(message)
    if match is None:
        return None, message
    call_id = match.group(1)
    return (None if call_id == "-" else call_id), message[match.end():]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601 UTC, ms), ``level``, ``logger``,
    ``call_id`` (only on lines about a call), ``message``, and ``exception``
    (the traceback as one string) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        call_id, message = split_call_id(record.getMessage())
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, str] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if call_id is not None:
            line["call_id"] = call_id
        line["message"] = message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def configure(level: int = logging.INFO, format: str = "text",
              stream: TextIO | None = None) -> None:
    """Log to stderr (journald takes it from there under systemd) in ``format``.

    Records skip what neither format prints: each record otherwise walks the
    stack for its source line and asks for the thread, process id and
    multiprocessing name; measured under call load, that was a third of
    logging's cost (the "Optimization" section of the logging documentation
    lists these switches).
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    elif format == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        raise ValueError(f"log format {format!r}: expected 'text' or 'json'")
    logging.basicConfig(level=level, handlers=[handler], force=True)
