"""Loss and sanity from the recordings, because the relay's counters are not on the wire.

Every recorded call writes what reached the relay: channel 1 is what the
caller's leg received (SIPp playing g711a.pcap), channel 2 what the
callee's leg received (SIPp echoing what we relayed to it). A lost or
dropped packet is a hole of silence in its channel. So counting the loud
samples (|x| > THRESHOLD) of each channel and comparing with the same count
in the capture times the number of plays gives the loss on each path:

- channel 1: caller -> our leg A (SIPp's sending, the kernel, our reading);
- channel 2: that, plus our relay out of leg B, SIPp's echo and back into B.

The capture has 44,977 loud samples in 236 packets (190 on average per
packet), so the figure resolves about one packet in a call.
"""

from __future__ import annotations

import struct
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load.common import SIPP_SAMPLES, percentile

THRESHOLD = 100
PCAP = SIPP_SAMPLES / "g711a.pcap"


def alaw_table() -> np.ndarray:
    """ITU-T G.711 A-law to 16-bit linear, written out so the check does not use our codec."""
    out = np.empty(256, dtype=np.int16)
    for code in range(256):
        a = code ^ 0x55
        t = (a & 0x0F) << 4
        segment = (a & 0x70) >> 4
        if segment == 0:
            t += 8
        elif segment == 1:
            t += 0x108
        else:
            t = (t + 0x108) << (segment - 1)
        out[code] = t if a & 0x80 else -t
    return out


def pcap_payloads(path: Path = PCAP) -> list[bytes]:
    """RTP payloads of a classic pcap of Ethernet/IPv4/UDP/RTP packets."""
    data = path.read_bytes()
    offset = 24
    payloads = []
    while offset + 16 <= len(data):
        included = struct.unpack_from("<I", data, offset + 8)[0]
        packet = data[offset + 16:offset + 16 + included]
        offset += 16 + included
        ip_header = (packet[14] & 0x0F) * 4
        rtp = packet[14 + ip_header + 8:]
        csrc = rtp[0] & 0x0F
        payloads.append(rtp[12 + 4 * csrc:])
    return payloads


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def repacketize(ptime_ms: int, source: Path = PCAP) -> bytes:
    """The capture's audio cut into ``ptime_ms`` packets, as a pcap SIPp can play.

    g711a.pcap has 30 ms packets (33 a second); DESIGN.md's figures are for
    20 ms G.711 (50 a second each way), so the load scripts play the same
    audio in 20 ms packets: same samples, same loud-sample count, 1.5 x the
    packet rate. Headers are the original's with lengths, sequence numbers,
    timestamps and the IPv4 checksum redone (UDP checksum 0: optional).
    """
    data = source.read_bytes()
    first = data[24:40]
    included = struct.unpack_from("<I", first, 8)[0]
    packet = data[40:40 + included]
    ip_len = (packet[14] & 0x0F) * 4
    eth, ip, udp = packet[:14], bytearray(packet[14:14 + ip_len]), bytearray(
        packet[14 + ip_len:14 + ip_len + 8])
    rtp = packet[14 + ip_len + 8:]
    ssrc = rtp[8:12]
    audio = b"".join(pcap_payloads(source))
    size = 8 * ptime_ms
    seconds, micros = struct.unpack_from("<II", first, 0)
    start = seconds + micros / 1e6
    out = bytearray(data[:24])
    for index in range(len(audio) // size):
        payload = audio[index * size:(index + 1) * size]
        header = struct.pack("!BBHI", 0x80, 8 | (0x80 if index == 0 else 0), index & 0xFFFF,
                             (index * size) & 0xFFFFFFFF) + ssrc
        udp_part = header + payload
        struct.pack_into("!HH", udp, 4, 8 + len(udp_part), 0)
        struct.pack_into("!H", ip, 2, ip_len + 8 + len(udp_part))
        struct.pack_into("!H", ip, 10, 0)
        struct.pack_into("!H", ip, 10, _checksum(bytes(ip)))
        frame = eth + bytes(ip) + bytes(udp) + udp_part
        when = start + index * ptime_ms / 1000
        out += struct.pack("<IIII", int(when), round((when % 1) * 1e6) % 1000000,
                           len(frame), len(frame))
        out += frame
    return bytes(out)


def prepare_pcap_dir(directory: Path, ptime_ms: int) -> Path:
    """``directory``/pcap/load.pcap, the capture load_caller_pcap.xml plays."""
    pcap_dir = directory / "pcap"
    if pcap_dir.is_symlink():
        pcap_dir.unlink()
    pcap_dir.mkdir(parents=True, exist_ok=True)
    target = pcap_dir / "load.pcap"
    if ptime_ms == 30:
        if not target.exists():
            target.symlink_to(PCAP)
    else:
        target.write_bytes(repacketize(ptime_ms))
    return target


def prepare_stream_file(directory: Path, plays: int) -> Path:
    """``directory``/pcap/load.raw: the capture's audio ``plays`` times, raw PCMA.

    For load_caller_stream.xml (SIPp's rtpstream sends it in 20 ms packets):
    the same audio as the pcap plays, so the same loss reference applies.
    """
    pcap_dir = directory / "pcap"
    if pcap_dir.is_symlink():
        pcap_dir.unlink()
    pcap_dir.mkdir(parents=True, exist_ok=True)
    target = pcap_dir / "load.raw"
    target.write_bytes(b"".join(pcap_payloads()) * plays)
    return target


@dataclass(frozen=True)
class Reference:
    packets: int
    seconds: float
    loud_samples: int


@cache
def reference() -> Reference:
    """What one play of g711a.pcap puts into a channel."""
    payloads = pcap_payloads()
    pcm = alaw_table()[np.frombuffer(b"".join(payloads), dtype=np.uint8)]
    return Reference(len(payloads), len(pcm) / 8000,
                     int(np.count_nonzero(np.abs(pcm.astype(np.int32)) > THRESHOLD)))


def analyse_recording(path: Path) -> dict[str, Any]:
    """Readable? How long, how many channels, and loud samples per channel."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            rate = wav.getframerate()
            frames = wav.getnframes()
            data = wav.readframes(frames)
    except (OSError, EOFError, wave.Error) as error:
        return {"path": str(path), "readable": False, "error": str(error)}
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels).astype(np.int32)
    loud = [int(np.count_nonzero(np.abs(samples[:, c]) > THRESHOLD)) for c in range(channels)]
    return {"path": str(path), "readable": True, "channels": channels, "rate": rate,
            "seconds": frames / rate if rate else 0.0, "loud": loud}


def analyse_recordings(paths: Iterable[Path], cdr_duration: Mapping[str, float],
                       plays: int) -> dict[str, Any]:
    """Loss per channel over all recordings, and their sanity against the CDRs.

    ``cdr_duration`` maps a recording id (the file's stem) to the CDR's
    billable duration; ``plays`` is how many times each caller played the
    capture, so a channel should hold ``plays`` x the reference's loud samples.
    """
    expected = reference().loud_samples * plays
    results = [analyse_recording(p) for p in paths]
    readable = [r for r in results if r["readable"]]
    diffs = [abs(r["seconds"] - cdr_duration[Path(r["path"]).stem]) for r in readable
             if Path(r["path"]).stem in cdr_duration]
    out: dict[str, Any] = {
        "files": len(results),
        "readable": len(readable),
        "unreadable": [r for r in results if not r["readable"]][:5],
        "stereo_8k": sum(r["channels"] == 2 and r["rate"] == 8000 for r in readable),
        "with_cdr": len(diffs),
        "duration_vs_cdr_max_s": max(diffs) if diffs else None,
        "duration_vs_cdr_p99_s": percentile(diffs, 99),
        "duration_within_0_1s": sum(d <= 0.1 for d in diffs),
        "expected_loud_per_channel": expected,
    }
    for channel, name in ((0, "caller"), (1, "callee")):
        got = [r["loud"][channel] for r in readable if len(r["loud"]) > channel]
        if not got or not expected:
            continue
        losses = [max(0.0, 1 - g / expected) for g in got]
        out[f"{name}_loss"] = 1 - sum(got) / (expected * len(got))
        out[f"{name}_loss_worst_call"] = max(losses)
        out[f"{name}_calls_with_loss"] = sum(loss > 0.004 for loss in losses)
        out[f"{name}_excess"] = sum(g > expected for g in got)
    return out
