"""A recorded call through mediacore on the bundled example config, end to end.

Starts ``mediacore serve`` (the example config: 127.0.0.1:5060, number
+31900123456 forwarding to 127.0.0.1:5070, recorded), a SIPp callee on
127.0.0.1:5070 that echoes RTP, and a SIPp caller that plays SIPp's
g711a.pcap; then stops the server with SIGTERM and prints the CDR and the
path of the recording. Everything lives under ./var/demo.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKDIR = REPO / "var" / "demo"
SIPP_SAMPLES = Path("/usr/share/sip-tester")


def main() -> int:
    sipp = shutil.which("sipp")
    if sipp is None:
        print("demo: sipp is not installed (scripts/system-deps installs it)", file=sys.stderr)
        return 1
    WORKDIR.mkdir(parents=True, exist_ok=True)
    pcap = WORKDIR / "pcap"
    if not pcap.exists():
        pcap.symlink_to(SIPP_SAMPLES)
    log_path = WORKDIR / "mediacore.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "mediacore", "serve"], cwd=WORKDIR,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "ready:" not in log_path.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(), file=sys.stderr)
                print("demo: the server did not start (is 5060 free?)", file=sys.stderr)
                return 1
            time.sleep(0.1)
        callee = subprocess.Popen(
            [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", "5070", "-m", "1", "-rtp_echo",
             "-nostdin", "-timeout", "60s"],
            cwd=WORKDIR, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        print("demo: calling +31900123456 from +31612345678 (about 10 s)...")
        caller = subprocess.run(
            [sipp, "-sf", str(REPO / "sipp-scenarios" / "caller_pcap.xml"),
             "-s", "+31900123456", "-i", "127.0.0.1", "-p", "5061", "-m", "1", "-d", "3000",
             "-nostdin", "-timeout", "60s", "-timeout_error", "127.0.0.1:5060"],
            cwd=WORKDIR, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
        callee.wait(timeout=30)
        if caller.returncode != 0:
            print(caller.stdout[-2000:], file=sys.stderr)
            print("demo: the call failed; see", log_path, file=sys.stderr)
            return 1
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    listing = subprocess.run([sys.executable, "-m", "mediacore", "cdr", "list",
                              "--format", "json"], cwd=WORKDIR, capture_output=True, text=True,
                             check=False)
    if listing.returncode != 0 or not listing.stdout.strip():
        print(listing.stderr, "demo: no CDR in the journal; see", log_path, file=sys.stderr)
        return 1
    cdr = json.loads(listing.stdout)[-1]
    print("CDR (from the journal, `mediacore cdr list --format json`):")
    for key, value in cdr.items():
        print(f"  {key:12} {value}")
    if cdr.get("recording"):
        print("recording:", WORKDIR / "var" / "recordings" / f"{cdr['recording']}.wav")
    print("server log:", log_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
