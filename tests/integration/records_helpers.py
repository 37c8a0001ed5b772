"""Shared by the records tests (unit and integration) and their child process.

Factories for CDRs, handles and configs, and waiting on conditions with a
deadline: records tests never assert on elapsed time, they wait for a state
and fail with what they were waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from mediacore.config import Config, parse_config
from mediacore.records.cdr import Cdr
from mediacore.wav import WavWriter

BASE = datetime(2026, 11, 23, 15, 4, 11, 123000, tzinfo=UTC)
DEADLINE = 60.0


def recent() -> datetime:
    """Now, to the millisecond: for handles whose retention must not be over yet."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def make_cdr(
    n: int | str,
    *,
    owner: str = "acme",
    number: str = "+31900123456",
    start: datetime = BASE,
    answered: bool = True,
    caller: str = "+31612345678",
    recording: str = "",
    node: str = "",
) -> Cdr:
    answer = start + timedelta(seconds=2) if answered else None
    return Cdr(
        call_id=f"call-{n}", sip_call_id=f"sip-{n}@carrier", number=number, owner=owner,
        caller=caller, target="sip:+31201234567@127.0.0.1:5070" if answered else "",
        start=start, answer=answer, end=start + timedelta(seconds=14, milliseconds=340),
        disposition="answered" if answered else "no-answer",
        sip_status=200 if answered else 487, hangup_by="caller", recording=recording,
        node=node,
    )


def make_config(storage: Path, redis_url: str | None = None, *, prefix: str = "mediacore",
                **records: Any) -> Config:
    document: dict[str, Any] = {"storage": {"dir": str(storage)},
                                "records": {"node": "test-node", **records}}
    if redis_url is not None:
        document["redis"] = {"url": redis_url, "prefix": prefix}
    return parse_config(document, "records-test.toml")


def config_toml(storage: Path, redis_url: str | None = None, **records: Any) -> str:
    lines = ["[storage]", f'dir = "{storage}"', "[records]", 'node = "test-node"']
    for key, value in records.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    if redis_url is not None:
        lines += ["[redis]", f'url = "{redis_url}"']
    return "\n".join(lines) + "\n"


def write_wav(path: Path, seconds: float = 1.0, channels: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(8000 * seconds)
    audio = (np.arange(frames * channels, dtype=np.int64) % 2000 - 1000).astype(np.int16)
    with WavWriter(path, sample_rate=8000, channels=channels) as writer:
        writer.write(audio.tobytes())
    return path


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE,
               interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


async def until(predicate: Callable[[], Any | Awaitable[Any]], what: str,
                timeout: float = DEADLINE, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
