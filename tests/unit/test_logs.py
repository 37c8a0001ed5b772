"""Log line shapes: the call id lifted out of ``call <id>: ...``, text and JSON forms."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mediacore import logs


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_split_call_id() -> None:
    assert logs.split_call_id("call 9f3a: bridged") == ("9f3a", "bridged")
    assert logs.split_call_id("call -: INVITE abc refused 404") == (None, "INVITE abc refused 404")
    assert logs.split_call_id("listening on udp:127.0.0.1:5060") == (
        None, "listening on udp:127.0.0.1:5060")
    # Only a prefix counts: a call id mentioned later is part of the message.
    assert logs.split_call_id("draining: call 9f3a: still up") == (
        None, "draining: call 9f3a: still up")


def test_json_lines_have_the_fields_and_nothing_else_changes() -> None:
    out = io.StringIO()
    logs.configure(logging.INFO, "json", stream=out)
    logging.getLogger("mediacore").info("call %s: ended %s", "77aa", "answered")
    logging.getLogger("mediacore.records").warning("journal is %s", "lagging")
    logging.getLogger("mediacore").debug("call 77aa: not at info")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["call_id"] == "77aa" and first["message"] == "ended answered"
    assert (first["level"], first["logger"]) == ("info", "mediacore")
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-12-04T23:00:00.000Z")
    assert "call_id" not in second and second["message"] == "journal is lagging"
    assert second["level"] == "warning"


def test_json_keeps_a_traceback_in_one_line() -> None:
    out = io.StringIO()
    logs.configure(logging.INFO, "json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("mediacore").exception("call %s: call control failed", "1b")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["call_id"] == "1b" and "RuntimeError: boom" in record["exception"]


def test_text_format_is_the_contract_line() -> None:
    out = io.StringIO()
    logs.configure(logging.INFO, "text", stream=out)
    logging.getLogger("mediacore").info("call %s: INVITE x for +31900123456", "5c")
    assert out.getvalue().rstrip().endswith(" INFO mediacore: call 5c: INVITE x for +31900123456")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.configure(logging.INFO, "xml")
