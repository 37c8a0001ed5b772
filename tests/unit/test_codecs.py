"""The compiled G.711 kernels (mediacore._codecs), checked against stdlib audioop.

audioop is the reference: on 3.11/3.12 the deprecated stdlib module, on 3.13+
the audioop-lts package (same C code, installs as ``audioop``). Exactness is
checked exhaustively (all 256 codes, all 65,536 samples, both laws); lengths
0..40 cover the tail of every unrolled loop; 1 MiB inputs cover the path that
runs with the GIL released. No test here measures time: see benchmarks/.
"""

from __future__ import annotations

import array
import ast
import inspect
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacore import _codecs
from mediacore._codecs import (
    alaw_decode,
    alaw_decode_into,
    alaw_decode_stereo,
    alaw_encode,
    interleave,
    ulaw_decode,
    ulaw_decode_into,
    ulaw_decode_stereo,
    ulaw_encode,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()

LAWS = {
    "ulaw": (ulaw_decode, ulaw_encode, ulaw_decode_stereo, ulaw_decode_into,
             audioop.ulaw2lin, audioop.lin2ulaw),
    "alaw": (alaw_decode, alaw_encode, alaw_decode_stereo, alaw_decode_into,
             audioop.alaw2lin, audioop.lin2alaw),
}
law_names = pytest.mark.parametrize("law", sorted(LAWS))


def decoder(law: str):
    return LAWS[law][0]


def encoder(law: str):
    return LAWS[law][1]


def stereo_decoder(law: str):
    return LAWS[law][2]


def into_decoder(law: str):
    return LAWS[law][3]


def ref_decode(law: str, data: bytes) -> bytes:
    return LAWS[law][4](data, 2)


def ref_encode(law: str, pcm: bytes) -> bytes:
    return LAWS[law][5](pcm, 2)


def ref_interleave(left: bytes, right: bytes) -> bytes:
    """Slow, obviously right: pad the shorter with zero samples, then alternate."""
    n = max(len(left), len(right)) // 2
    left = left.ljust(2 * n, b"\0")
    right = right.ljust(2 * n, b"\0")
    return b"".join(left[2 * i : 2 * i + 2] + right[2 * i : 2 * i + 2] for i in range(n))


pcm_samples = st.lists(st.integers(-32768, 32767), max_size=600).map(
    lambda xs: struct.pack(f"<{len(xs)}h", *xs)
)
payloads = st.binary(max_size=600)


# --------------------------------------------------------------------------
# Exactness against audioop


@law_names
def test_decode_matches_audioop_for_every_code(law: str) -> None:
    out = decoder(law)(ALL_CODES)
    assert type(out) is bytes
    assert out == ref_decode(law, ALL_CODES)


@law_names
def test_encode_matches_audioop_for_every_sample(law: str) -> None:
    out = encoder(law)(ALL_SAMPLES)
    assert type(out) is bytes
    assert out == ref_encode(law, ALL_SAMPLES)


@law_names
def test_every_length_and_alignment(law: str) -> None:
    # The little-endian fast paths take 4 samples per step and finish with a
    # one-sample loop; every length 0..40 at every start offset 0..7 hits all
    # combinations of misaligned start and tail.
    raw = os.urandom(128)
    for start in range(8):
        for n in range(41):
            payload = memoryview(raw)[start : start + n]
            assert decoder(law)(payload) == ref_decode(law, bytes(payload))
            pcm = memoryview(raw)[start : start + 2 * n]
            assert encoder(law)(pcm) == ref_encode(law, bytes(pcm))


@law_names
def test_large_inputs_match_audioop(law: str) -> None:
    # Above NOGIL_MIN_BYTES the loops run with the GIL released.
    assert _codecs.NOGIL_MIN_BYTES <= 1 << 20
    payload = os.urandom(1 << 20)
    assert decoder(law)(payload) == ref_decode(law, payload)
    pcm = os.urandom(1 << 20)
    assert encoder(law)(pcm) == ref_encode(law, pcm)


@law_names
def test_decode_encode_decode_is_stable(law: str) -> None:
    # G.711 quantisation is idempotent: a decoded code re-encodes to a code
    # that decodes to the same sample (mu-law 0x7F, "negative zero", becomes
    # 0xFF; every other code comes back as itself).
    pcm = decoder(law)(ALL_CODES)
    assert decoder(law)(encoder(law)(pcm)) == pcm


@law_names
@given(pcm=pcm_samples)
def test_round_trip_matches_audioop(law: str, pcm: bytes) -> None:
    expected = ref_decode(law, ref_encode(law, pcm))
    assert decoder(law)(encoder(law)(pcm)) == expected


@law_names
@given(payload=payloads)
def test_decode_property(law: str, payload: bytes) -> None:
    assert decoder(law)(payload) == ref_decode(law, payload)


# --------------------------------------------------------------------------
# Input buffer types


def buffer_variants(raw: bytes) -> dict[str, object]:
    class Sub(bytes):
        pass

    arr = np.frombuffer(raw, np.uint8).copy()
    readonly = arr.copy()
    readonly.flags.writeable = False
    return {
        "bytes": raw,
        "bytes subclass": Sub(raw),
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "memoryview slice": memoryview(b"\xaa" * 12 + raw + b"\xbb")[12:-1],
        "read-only memoryview": memoryview(bytearray(raw)).toreadonly(),
        "numpy uint8": arr,
        "numpy read-only": readonly,
        "numpy 2-d C-contiguous": arr.reshape(2, -1) if len(raw) % 2 == 0 else arr,
        "array.array B": array.array("B", raw),
    }


@law_names
def test_decode_accepts_any_contiguous_buffer(law: str) -> None:
    raw = os.urandom(160)
    expected = ref_decode(law, raw)
    for name, buf in buffer_variants(raw).items():
        assert decoder(law)(buf) == expected, name


@law_names
def test_encode_accepts_any_contiguous_buffer(law: str) -> None:
    raw = os.urandom(320)
    expected = ref_encode(law, raw)
    for name, buf in buffer_variants(raw).items():
        assert encoder(law)(buf) == expected, name


@law_names
def test_encode_accepts_numpy_int16(law: str) -> None:
    # Announcements are prepared as numpy int16; its buffer is read as raw
    # bytes, which is little-endian PCM on the machines we run on.
    samples = np.array([-32768, -1, 0, 1, 1000, 32767], dtype=np.int16)
    expected = ref_encode(law, samples.astype("<i2").tobytes())
    assert encoder(law)(samples) == expected
    assert encoder(law)(array.array("h", samples.tolist())) == expected
    assert encoder(law)(memoryview(samples)) == expected


def test_interleave_accepts_numpy_int16() -> None:
    left = np.array([1, -2, 3], dtype=np.int16)
    right = np.array([-4, 5, -6], dtype=np.int16)
    out = np.frombuffer(interleave(left, right), "<i2")
    assert out.tolist() == [1, -4, -2, 5, 3, -6]


NON_CONTIGUOUS = {
    "numpy strided": lambda: np.zeros(64, np.uint8)[::2],
    "numpy int16 strided": lambda: np.zeros(64, np.int16)[::2],
    "numpy fortran 2-d": lambda: np.zeros((4, 8), np.uint8, order="F"),
    "memoryview with step": lambda: memoryview(bytes(64))[::2],
}


@pytest.mark.parametrize("make", NON_CONTIGUOUS.values(), ids=NON_CONTIGUOUS.keys())
def test_non_contiguous_buffers_are_value_errors(make) -> None:
    for func in (ulaw_decode, alaw_decode, ulaw_encode, alaw_encode):
        with pytest.raises(ValueError, match="C-contiguous"):
            func(make())
    with pytest.raises(ValueError, match="'right_pcm' must be a C-contiguous"):
        interleave(b"", make())
    with pytest.raises(ValueError, match="'left_payload' must be a C-contiguous"):
        ulaw_decode_stereo(make(), b"")
    with pytest.raises(ValueError, match="'out' must be a C-contiguous"):
        ulaw_decode_into(b"", make())


# --------------------------------------------------------------------------
# Bad input


WRONG_TYPES = ["text", 160, 1.5, None, [1, 2, 3], (0,), object()]


@pytest.mark.parametrize("bad", WRONG_TYPES, ids=lambda v: type(v).__name__)
def test_wrong_types_are_type_errors(bad: object) -> None:
    name = type(bad).__name__
    for func in (ulaw_decode, alaw_decode, ulaw_encode, alaw_encode):
        with pytest.raises(TypeError, match=rf"must be a bytes-like object .*not {name}$"):
            func(bad)
    for func in (interleave, ulaw_decode_stereo, alaw_decode_stereo):
        with pytest.raises(TypeError, match=f"not {name}$"):
            func(bad, b"")
        with pytest.raises(TypeError, match=f"not {name}$"):
            func(b"", bad)
    for func in (ulaw_decode_into, alaw_decode_into):
        with pytest.raises(TypeError, match=f"argument 'data' .*not {name}$"):
            func(bad, bytearray(8))
        with pytest.raises(TypeError, match=f"argument 'out' .*not {name}$"):
            func(b"", bad)


def test_type_error_names_function_and_argument() -> None:
    with pytest.raises(TypeError, match=r"^interleave\(\) argument 'right_pcm' "):
        interleave(b"", "x")
    with pytest.raises(TypeError, match=r"^alaw_decode_stereo\(\) argument 'left_payload' "):
        alaw_decode_stereo("x", b"")


def test_arity_and_keywords() -> None:
    with pytest.raises(TypeError):
        ulaw_decode()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ulaw_decode(b"", b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ulaw_decode(data=b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        interleave(b"")  # type: ignore[call-arg]


@pytest.mark.parametrize("func", [ulaw_encode, alaw_encode])
def test_odd_length_pcm_is_value_error(func) -> None:
    with pytest.raises(ValueError, match=r"'pcm' must be 16-bit PCM.*got 321 bytes"):
        func(bytes(321))
    with pytest.raises(ValueError, match="got 1 bytes"):
        func(bytearray(1))


def test_odd_length_interleave_is_value_error() -> None:
    with pytest.raises(ValueError, match=r"'left_pcm' must be 16-bit PCM.*got 3 bytes"):
        interleave(bytes(3), bytes(4))
    with pytest.raises(ValueError, match=r"'right_pcm' must be 16-bit PCM.*got 5 bytes"):
        interleave(bytes(4), memoryview(bytes(5)))


def test_errors_release_buffers() -> None:
    # A buffer acquired before an error must be released, or the bytearray
    # could never be resized again.
    left = bytearray(4)
    with pytest.raises(ValueError):
        interleave(left, bytes(3))
    with pytest.raises(TypeError):
        ulaw_decode_stereo(left, None)
    pcm = bytearray(3)
    with pytest.raises(ValueError):
        ulaw_encode(pcm)
    out = bytearray(4)
    with pytest.raises(ValueError):
        ulaw_decode_into(left, out)
    left.extend(b"ok")
    pcm.extend(b"ok")
    out.extend(b"ok")


def test_empty_input_gives_empty_bytes() -> None:
    for func in (ulaw_decode, alaw_decode, ulaw_encode, alaw_encode):
        for empty in (b"", bytearray(), memoryview(b""), np.zeros(0, np.int16)):
            assert func(empty) == b""
            assert type(func(empty)) is bytes
    for func in (interleave, ulaw_decode_stereo, alaw_decode_stereo):
        assert func(b"", b"") == b""


# --------------------------------------------------------------------------
# Interleave and stereo decode


def test_interleave_layout() -> None:
    left = struct.pack("<3h", 1, 2, 3)
    right = struct.pack("<3h", -1, -2, -3)
    assert struct.unpack("<6h", interleave(left, right)) == (1, -1, 2, -2, 3, -3)


def test_interleave_pads_shorter_side_with_silence() -> None:
    left = struct.pack("<3h", 1, 2, 3)
    right = struct.pack("<1h", -1)
    assert struct.unpack("<6h", interleave(left, right)) == (1, -1, 2, 0, 3, 0)
    assert struct.unpack("<6h", interleave(right, left)) == (-1, 1, 0, 2, 0, 3)
    assert struct.unpack("<4h", interleave(b"", struct.pack("<2h", 7, 8))) == (0, 7, 0, 8)


@given(left=pcm_samples, right=pcm_samples)
def test_interleave_property(left: bytes, right: bytes) -> None:
    out = interleave(left, right)
    assert out == ref_interleave(left, right)
    # De-interleaving gives back both channels, the shorter one zero-padded.
    frames = np.frombuffer(out, "<i2").reshape(-1, 2)
    assert frames[: len(left) // 2, 0].tobytes() == left
    assert frames[: len(right) // 2, 1].tobytes() == right
    assert not frames[len(left) // 2 :, 0].any()
    assert not frames[len(right) // 2 :, 1].any()


@law_names
@given(left=payloads, right=payloads)
def test_stereo_decode_equals_interleave_of_decodes(law: str, left: bytes, right: bytes) -> None:
    dec = decoder(law)
    expected = interleave(dec(left), dec(right))
    assert stereo_decoder(law)(left, right) == expected
    assert expected == ref_interleave(ref_decode(law, left), ref_decode(law, right))


@law_names
def test_stereo_decode_every_length_pair(law: str) -> None:
    raw = os.urandom(20)
    for nl in range(12):
        for nr in range(12):
            left, right = raw[:nl], raw[8 : 8 + nr]
            expected = ref_interleave(ref_decode(law, left), ref_decode(law, right))
            assert stereo_decoder(law)(left, right) == expected, (nl, nr)


def test_stereo_padding_is_pcm_zero_not_the_alaw_silence_code() -> None:
    # A-law 0xD5 decodes to +8; missing audio must be true silence.
    out = alaw_decode_stereo(b"\xd5\xd5", b"")
    assert struct.unpack("<4h", out) == (8, 0, 8, 0)
    out = ulaw_decode_stereo(b"", b"\xff")
    assert struct.unpack("<2h", out) == (0, 0)


@law_names
def test_large_stereo_and_interleave(law: str) -> None:
    left = os.urandom(1 << 19)
    right = os.urandom((1 << 19) - 3)
    expected = interleave(ref_decode(law, left), ref_decode(law, right))
    assert stereo_decoder(law)(left, right) == expected
    frames = np.frombuffer(expected, "<i2").reshape(-1, 2)
    assert frames[-3:, 1].tolist() == [0, 0, 0]


# --------------------------------------------------------------------------
# decode_into


@law_names
def test_decode_into_mono(law: str) -> None:
    payload = os.urandom(160)
    out = bytearray(b"\x55" * 330)
    end = into_decoder(law)(payload, out, 5)
    assert end == 5 + 320
    assert out[5:325] == ref_decode(law, payload)
    assert out[:5] == b"\x55" * 5
    assert out[325:] == b"\x55" * 5
    assert into_decoder(law)(payload, out) == 320
    assert out[:320] == ref_decode(law, payload)


@law_names
def test_decode_into_stereo_channels_build_a_recording(law: str) -> None:
    # How the recorder uses it: a zeroed stereo buffer, each leg decoded into
    # its channel at its own frame offset, packets arriving independently.
    caller = [os.urandom(160) for _ in range(3)]
    callee = [os.urandom(160) for _ in range(2)]
    buf = bytearray(4 * 160 * 3)
    dec = into_decoder(law)
    for i, p in enumerate(caller):
        assert dec(p, buf, 4 * 160 * i, channels=2, channel=0) == 4 * 160 * (i + 1)
    # The callee's first packet was lost: its frames stay silent.
    for i, p in enumerate(callee, start=1):
        dec(p, buf, 4 * 160 * i, channels=2, channel=1)
    expected = ref_interleave(
        ref_decode(law, b"".join(caller)), bytes(320) + ref_decode(law, b"".join(callee))
    )
    assert bytes(buf) == expected


def test_decode_into_other_writable_buffers() -> None:
    payload = os.urandom(33)
    expected = np.frombuffer(ulaw_decode(payload), "<i2")
    arr = np.zeros(33, np.int16)
    assert ulaw_decode_into(payload, arr) == 66
    assert np.array_equal(arr, expected)
    mv = memoryview(bytearray(70))[2:68]
    ulaw_decode_into(memoryview(payload), mv)
    assert mv.tobytes() == expected.tobytes()
    multi = np.zeros((33, 3), np.int16)
    ulaw_decode_into(payload, multi, channels=3, channel=2)
    assert np.array_equal(multi[:, 2], expected)
    assert not multi[:, :2].any()


def test_decode_into_refuses_bad_targets_and_writes_nothing() -> None:
    out = bytearray(b"\x11" * 10)
    with pytest.raises(ValueError, match="need 12 bytes; out has 10"):
        ulaw_decode_into(bytes(6), out)
    with pytest.raises(ValueError, match="need 12 bytes"):
        ulaw_decode_into(bytes(2), out, 0, channels=3, channel=1)
    with pytest.raises(ValueError, match="offset must not be negative"):
        ulaw_decode_into(b"\x00", out, -1)
    with pytest.raises(ValueError, match=r"0 samples at offset 11 .* need 11 bytes; out has 10"):
        ulaw_decode_into(b"", out, 11)
    with pytest.raises(ValueError, match=r"channel must be in range\(2\)"):
        ulaw_decode_into(b"\x00", out, channels=2, channel=2)
    with pytest.raises(ValueError, match=r"channel must be in range\(2\)"):
        ulaw_decode_into(b"\x00", out, channels=2, channel=-1)
    with pytest.raises(ValueError, match=r"channels must be in 1\.\.65535"):
        ulaw_decode_into(b"\x00", out, channels=0)
    with pytest.raises(ValueError, match="must not share memory"):
        ulaw_decode_into(memoryview(out)[2:4], out)
    with pytest.raises(ValueError, match="must not share memory"):
        ulaw_decode_into(memoryview(out)[8:10], out, 6)
    assert out == b"\x11" * 10
    assert ulaw_decode_into(b"", out, 10) == 10
    # Adjacent is not overlapping: the input may sit right after the output.
    assert ulaw_decode_into(memoryview(out)[4:6], out) == 4
    assert out[:4] == ulaw_decode(b"\x11\x11")


@pytest.mark.parametrize(
    "readonly",
    [b"\0" * 8, memoryview(bytearray(8)).toreadonly(), np.zeros(8, np.uint8)[::1].view()],
    ids=["bytes", "read-only memoryview", "read-only numpy"],
)
def test_decode_into_read_only_target_is_type_error(readonly) -> None:
    if isinstance(readonly, np.ndarray):
        readonly.flags.writeable = False
    with pytest.raises(TypeError, match="'out' must be a writable buffer"):
        alaw_decode_into(b"\x00", readonly)


# --------------------------------------------------------------------------
# Threads (the GIL-released path)


def test_concurrent_large_decodes_are_correct() -> None:
    payloads_ = [os.urandom(_codecs.NOGIL_MIN_BYTES * 2 + i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ulaw_decode, payloads_))
    assert results == [audioop.ulaw2lin(p, 2) for p in payloads_]


# --------------------------------------------------------------------------
# The stub file is the documentation: keep it in step with the module.

STUB = Path(_codecs.__file__).with_name("_codecs.pyi")


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def test_stub_lists_the_public_api() -> None:
    tree = stub_tree()
    stub_funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    runtime_funcs = {n for n in _codecs.__all__ if callable(getattr(_codecs, n))}
    assert stub_funcs == runtime_funcs
    stub_all = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and n.targets[0].id == "__all__"  # type: ignore[attr-defined]
    )
    assert stub_all == _codecs.__all__


def test_stub_docstrings_match_runtime_docstrings() -> None:
    tree = stub_tree()
    assert ast.get_docstring(tree) == inspect.cleandoc(_codecs.__doc__ or "")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            runtime = getattr(_codecs, node.name)
            assert ast.get_docstring(node) == inspect.cleandoc(runtime.__doc__ or ""), node.name


def test_stub_signatures_match_runtime_signatures() -> None:
    for node in stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            runtime = inspect.signature(getattr(_codecs, node.name))
            args = node.args
            assert [a.arg for a in args.posonlyargs] == [
                p.name for p in runtime.parameters.values() if p.kind is p.POSITIONAL_ONLY
            ], node.name
            assert [a.arg for a in args.args] == [
                p.name for p in runtime.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD
            ], node.name
            assert [a.arg for a in args.kwonlyargs] == [
                p.name for p in runtime.parameters.values() if p.kind is p.KEYWORD_ONLY
            ], node.name
