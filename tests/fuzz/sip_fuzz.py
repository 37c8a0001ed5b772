"""Mutation fuzzing of the SIP parser and the endpoint (parser, transactions, UAS core).

Seeds are the RFC 4475 torture messages and a typical carrier INVITE. Each
case mutates a seed (byte flips, insertions and deletions, cut-offs, lines
duplicated, dropped, swapped or spliced in from another seed, header names
changed to their compact form or case, numbers made huge or negative) and
feeds it to

* :func:`mediacore.sip.message.parse`, where the only allowed exception is
  ParseError, and whatever parses must serialise into something that parses
  back equal; and
* a long-lived :class:`mediacore.sip.endpoint.SipEndpoint` with the B2BUA
  answering what reaches it, over UDP and TCP peers, with its timers driven
  forward, where no exception is allowed at all (the endpoint answers bad
  input, it never raises) and every transaction must end.

The run is deterministic for a seed. Run it (100,000 cases take about 15 s
on the 2-core machines; results are in benchmarks/RESULTS.md):

    .venv/bin/python -m tests.fuzz.sip_fuzz --cases 100000 --seed 1

A short run of the same code is part of the unit tests
(``tests/unit/test_sip_fuzz.py``).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mediacore.calls.b2bua import B2BUA
from mediacore.calls.call import LocalContact
from mediacore.config import Config, NumberConfig
from mediacore.sip import message as sip
from mediacore.sip.endpoint import Output, SipEndpoint, Transmit
from mediacore.sip.transport import Peer
from tests.support.media import FakeMedia
from tests.support.messages import CARRIER_INVITE, TARGET_200_OK

TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "sip-torture" / "rfc4475"

COMPACT = {b"Via": b"v", b"Call-ID": b"i", b"From": b"f", b"To": b"t", b"Contact": b"m",
           b"Content-Length": b"l", b"Content-Type": b"c", b"Supported": b"k"}
TOKENS = [b"\r\n", b"\r\n ", b";", b",", b":", b"<", b">", b'"', b"\\", b"%", b"%00", b"\x00",
          b"\xff", b"@", b"[", b"]", b"sip:", b"sips:", b"tel:", b"SIP/2.0", b"z9hG4bK", b" ",
          b"\t", b"=", b"99999999999999999999", b"-1", b"0", b"INVITE", b"ACK", b"BYE",
          b"CANCEL", b"\r\n\r\n", b"Content-Length: 0", b"l: 100000"]


def seeds() -> list[bytes]:
    found = sorted(TORTURE.glob("*.dat"))
    if not found:
        raise SystemExit(f"no RFC 4475 messages at {TORTURE}")
    return [path.read_bytes() for path in found] + [CARRIER_INVITE, TARGET_200_OK]


def mutate(data: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
    """One to four random mutations of ``data``."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(10)
        position = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:  # flip bits of a byte
            index = min(position, len(buffer) - 1)
            buffer[index] ^= 1 << rng.randrange(8)
        elif choice == 1:  # insert a token SIP cares about
            buffer[position:position] = rng.choice(TOKENS)
        elif choice == 2:  # delete a run
            del buffer[position:position + rng.randint(1, 16)]
        elif choice == 3:  # cut off
            del buffer[position:]
        elif choice in (4, 5, 6):  # work on whole lines
            lines = bytes(buffer).split(b"\r\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if choice == 4:
                lines.insert(j, lines[i])
            elif choice == 5:
                lines[i], lines[j] = lines[j], lines[i]
            elif len(lines) > 1:
                del lines[i]
            buffer = bytearray(b"\r\n".join(lines))
        elif choice == 7:  # splice a line from another seed
            donor = rng.choice(corpus).split(b"\r\n")
            lines = bytes(buffer).split(b"\r\n")
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(donor))
            buffer = bytearray(b"\r\n".join(lines))
        elif choice == 8:  # compact forms and odd case
            name = rng.choice(list(COMPACT))
            replacement = COMPACT[name] if rng.random() < 0.5 else name.swapcase()
            buffer = bytearray(bytes(buffer).replace(name + b":", replacement + b":", 1))
        else:  # numbers gone wild
            digits = [i for i, byte in enumerate(buffer) if 0x30 <= byte <= 0x39]
            if digits:
                index = rng.choice(digits)
                buffer[index:index + 1] = rng.choice([b"4294967296", b"-", b"00000000000", b"x"])
    return bytes(buffer)


@dataclass
class Stats:
    cases: int = 0
    parsed: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        refused = ", ".join(f"{status}: {n}" for status, n in sorted(self.refused.items()))
        return (f"{self.cases} cases: {self.parsed} parsed, refused by status {{{refused}}}, "
                f"{len(self.failures)} failures")


def run(cases: int, seed: int, on_failure: Callable[[str], None] | None = None) -> Stats:
    rng = random.Random(seed)
    corpus = seeds()
    # The torture messages' numbers are in the plan, so that mutated INVITEs
    # also start calls, dial a target and run their timers out.
    numbers = tuple(NumberConfig(number=n, owner="fuzz", targets=("sip:t@127.0.0.1:5080",))
                    for n in ("+31900123456", "+15555555555"))
    config = Config(source="fuzz", numbers=numbers)
    endpoint = SipEndpoint(config.sip)
    b2bua = B2BUA(config, endpoint, media_factory=lambda call_id: FakeMedia(),
                  local=LocalContact("127.0.0.1", 5060), recordings_dir=Path("/nonexistent"),
                  on_call_ended=lambda call: call.cdr(),
                  wall_clock=lambda now: datetime(2026, 1, 1, tzinfo=UTC))

    def settle(outputs: list[Output], now: float) -> None:
        """Let the B2BUA answer what reaches it, as the server would."""
        for output in outputs:
            if not isinstance(output, Transmit):
                outputs += b2bua.handle(output, now)

    peers = [Peer("udp", "127.0.0.1", 5070), Peer("tcp", "127.0.0.1", 40000),
             Peer("udp", "198.51.100.66", 5060)]
    stats = Stats()
    now = 0.0
    for case in range(cases):
        data = mutate(rng.choice(corpus), corpus, rng)
        stats.cases += 1
        try:
            message = sip.parse(data)
        except sip.ParseError as error:
            stats.refused[error.status] = stats.refused.get(error.status, 0) + 1
        except Exception:
            stats.failures.append(f"case {case}: parse raised\n{data!r}\n"
                                  f"{traceback.format_exc()}")
        else:
            stats.parsed += 1
            try:
                again = sip.parse(sip.serialize(message))
                if again != message:
                    stats.failures.append(f"case {case}: round trip changed\n{data!r}")
            except Exception:
                stats.failures.append(f"case {case}: serialised form does not parse\n"
                                      f"{data!r}\n{traceback.format_exc()}")
        now += rng.random() * 0.2
        try:
            settle(endpoint.receive(data, rng.choice(peers), now), now)
            if (deadline := endpoint.next_deadline()) is not None and deadline <= now:
                settle(endpoint.handle_timer(now), now)
        except Exception:
            stats.failures.append(f"case {case}: endpoint raised\n{data!r}\n"
                                  f"{traceback.format_exc()}")
        if stats.failures and on_failure is not None:
            on_failure(stats.failures[-1])
            stats.failures.clear()
    # Let every transaction run out: timers must not raise either.
    try:
        while (deadline := endpoint.next_deadline()) is not None:
            settle(endpoint.handle_timer(deadline), deadline)
    except Exception:
        stats.failures.append(f"timers raised\n{traceback.format_exc()}")
    if len(endpoint.transactions) != 0:
        stats.failures.append(f"{len(endpoint.transactions)} transactions never ended")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the endpoint logs every refusal; noise here
    started = time.monotonic()
    failures: list[str] = []
    stats = run(args.cases, args.seed, on_failure=failures.append)
    stats.failures = failures + stats.failures
    for failure in stats.failures[:20]:
        print(failure, file=sys.stderr)
    print(f"{stats.summary()} in {time.monotonic() - started:.1f}s (seed {args.seed})")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
