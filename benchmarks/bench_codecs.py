"""G.711 kernels (mediacore._codecs) against stdlib audioop and numpy lookup tables.

Each group puts the contenders for one job side by side in one run, so the
table compares them under the same machine load:

- decode/encode a 20 ms packet (160 payload bytes, 160 samples = 320 bytes
  of PCM) and 1 MiB of input, both laws;
- stereo for the recorder: two 160-byte payloads to interleaved PCM, and
  interleaving two mono PCM streams (a packet each, and 1 MiB each).

    .venv/bin/pytest benchmarks/bench_codecs.py --benchmark-only

(the path is needed: pyproject's testpaths only covers tests/). Every
contender's output is checked against audioop once before it is timed, so
nothing is timed on output it got wrong. ``extra_info["bytes"]`` is the input
size per call, for MB/s. Results and the machine: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from mediacore import _codecs as c

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PACKET = 160
MIB = 1 << 20
SIZES = {"160B": PACKET, "1MiB": MIB}

_rng = random.Random(711)
PAYLOAD = {name: _rng.randbytes(n) for name, n in SIZES.items()}
# Encode input: 160 samples per packet, 1 MiB of PCM; speech-like amplitudes.
PCM = {
    name: np.random.default_rng(711)
    .normal(0, 3000, n // 2 if name == "1MiB" else n)
    .clip(-32768, 32767)
    .astype("<i2")
    .tobytes()
    for name, n in SIZES.items()
}

REF_DECODE = {"ulaw": audioop.ulaw2lin, "alaw": audioop.alaw2lin}
REF_ENCODE = {"ulaw": audioop.lin2ulaw, "alaw": audioop.lin2alaw}
CY_DECODE = {"ulaw": c.ulaw_decode, "alaw": c.alaw_decode}
CY_ENCODE = {"ulaw": c.ulaw_encode, "alaw": c.alaw_encode}
CY_STEREO = {"ulaw": c.ulaw_decode_stereo, "alaw": c.alaw_decode_stereo}
CY_INTO = {"ulaw": c.ulaw_decode_into, "alaw": c.alaw_decode_into}

# numpy contenders: the usual table-lookup idiom, tables built from audioop.
NP_DECODE_TABLE = {
    law: np.frombuffer(ref(bytes(range(256)), 2), "<i2").copy() for law, ref in REF_DECODE.items()
}
NP_ENCODE_TABLE = {
    law: np.frombuffer(ref(np.arange(65536, dtype="<u2").tobytes(), 2), np.uint8).copy()
    for law, ref in REF_ENCODE.items()
}

laws = pytest.mark.parametrize("law", ["ulaw", "alaw"])
sizes = pytest.mark.parametrize("size", list(SIZES))


def run(benchmark, group: str, func: Callable[..., bytes], *args, expected: bytes) -> None:
    assert func(*args) == expected
    benchmark.group = group
    benchmark.extra_info["bytes"] = sum(memoryview(a).nbytes for a in args)
    benchmark(func, *args)


# --------------------------------------------------------------------------
# Decode


def decode_contenders(law: str) -> dict[str, Callable[[bytes], bytes]]:
    table = NP_DECODE_TABLE[law]
    ref = REF_DECODE[law]
    return {
        "cython": CY_DECODE[law],
        "cython-memoryview": CY_DECODE[law],  # given a memoryview, see below
        "audioop": lambda data: ref(data, 2),
        "numpy": lambda data: table[np.frombuffer(data, np.uint8)].tobytes(),
    }


@laws
@sizes
@pytest.mark.parametrize("impl", ["cython", "cython-memoryview", "audioop", "numpy"])
def test_decode(benchmark, law: str, size: str, impl: str) -> None:
    data = PAYLOAD[size]
    func = decode_contenders(law)[impl]
    if impl == "cython-memoryview":
        # What the relay may hand over: the payload as a slice of the datagram.
        data = memoryview(bytes(12) + data)[12:]
    run(benchmark, f"decode {law} {size}", func, data,
        expected=REF_DECODE[law](bytes(data), 2))


# --------------------------------------------------------------------------
# Encode


def encode_contenders(law: str) -> dict[str, Callable[[bytes], bytes]]:
    table = NP_ENCODE_TABLE[law]
    ref = REF_ENCODE[law]
    return {
        "cython": CY_ENCODE[law],
        "audioop": lambda pcm: ref(pcm, 2),
        "numpy": lambda pcm: table[np.frombuffer(pcm, "<u2")].tobytes(),
    }


@laws
@sizes
@pytest.mark.parametrize("impl", ["cython", "audioop", "numpy"])
def test_encode(benchmark, law: str, size: str, impl: str) -> None:
    pcm = PCM[size]
    run(benchmark, f"encode {law} {size}", encode_contenders(law)[impl], pcm,
        expected=REF_ENCODE[law](pcm, 2))


# --------------------------------------------------------------------------
# Stereo: two payloads straight to interleaved PCM (the recorder's job)


def np_interleave(left: bytes, right: bytes) -> bytes:
    out = np.empty((len(left) // 2, 2), "<i2")
    out[:, 0] = np.frombuffer(left, "<i2")
    out[:, 1] = np.frombuffer(right, "<i2")
    return out.tobytes()


def audioop_interleave(left: bytes, right: bytes) -> bytes:
    # The classic audioop idiom: widen each side to stereo, then add.
    return audioop.add(audioop.tostereo(left, 2, 1, 0), audioop.tostereo(right, 2, 0, 1), 2)


def stereo_contenders(law: str) -> dict[str, Callable[[bytes, bytes], bytes]]:
    table = NP_DECODE_TABLE[law]
    dec, ref, into = CY_DECODE[law], REF_DECODE[law], CY_INTO[law]
    buf = bytearray(4 * PACKET)

    def cython_into(left: bytes, right: bytes) -> bytes:
        # Preallocated buffer, one call per leg, as packets arrive.
        into(left, buf, 0, channels=2, channel=0)
        into(right, buf, 0, channels=2, channel=1)
        return buf

    def numpy_(left: bytes, right: bytes) -> bytes:
        out = np.empty((len(left), 2), "<i2")
        out[:, 0] = table[np.frombuffer(left, np.uint8)]
        out[:, 1] = table[np.frombuffer(right, np.uint8)]
        return out.tobytes()

    return {
        "cython decode_stereo": CY_STEREO[law],
        "cython interleave(decode, decode)": lambda lft, rgt: c.interleave(dec(lft), dec(rgt)),
        "cython decode_into x2": cython_into,
        "audioop": lambda lft, rgt: audioop_interleave(ref(lft, 2), ref(rgt, 2)),
        "numpy": numpy_,
    }


@laws
@pytest.mark.parametrize(
    "impl",
    ["cython decode_stereo", "cython interleave(decode, decode)", "cython decode_into x2",
     "audioop", "numpy"],
)
def test_decode_stereo(benchmark, law: str, impl: str) -> None:
    left = PAYLOAD["160B"]
    right = bytes(reversed(left))
    ref = REF_DECODE[law]
    run(benchmark, f"stereo decode {law} 160B+160B", stereo_contenders(law)[impl], left, right,
        expected=audioop_interleave(ref(left, 2), ref(right, 2)))


# --------------------------------------------------------------------------
# Interleave two mono PCM streams


@sizes
@pytest.mark.parametrize("impl", ["cython", "numpy", "audioop"])
def test_interleave(benchmark, size: str, impl: str) -> None:
    n = SIZES[size] if size == "1MiB" else 2 * PACKET
    rng = random.Random(5)
    left, right = rng.randbytes(n), rng.randbytes(n)
    func = {"cython": c.interleave, "numpy": np_interleave, "audioop": audioop_interleave}[impl]
    label = "320B+320B" if size == "160B" else "1MiB+1MiB"
    run(benchmark, f"interleave {label}", func, left, right,
        expected=audioop_interleave(left, right))
