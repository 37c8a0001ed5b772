"""A RecordsService SIGKILLed while publishing: every CDR still arrives exactly once.

A real child process (records_child.py) runs the service against the real
redis-server and is killed with SIGKILL at chosen moments:

1. it journals 4,000 CDRs while Redis is unreachable (they wait in the
   journal) and is killed;
2. restarted with Redis, it replays those thousands while journaling 2,000
   more, and is killed in the middle of publishing;
3. restarted, it is killed again in the middle of the replay;
4. restarted, it finishes and is stopped with SIGTERM;
5. with its cursor deleted, it replays the whole journal, all of it dropped
   by the markers in Redis.

Then the stream must hold each journaled call_id exactly once (XLEN equal
to the number of distinct CDRs in the journal), and the journal must read
back cleanly through ``mediacore cdr list`` with no duplicates.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from mediacore.records.journal import journal_dir, read_entries
from tests.integration.records_helpers import config_toml, wait_until
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("records_child.py")
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


class Child:
    """One run of records_child.py, its stdout read on a thread so waits can time out."""

    def __init__(self, config: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def expect(self, word: str) -> str:
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                self.kill()
                pytest.fail(f"child said nothing for {TIMEOUT:.0f} s waiting for {word!r}:\n"
                            + "".join(self.stderr[-30:]))
            if line is None:
                pytest.fail(f"child exited ({self.process.wait()}) before {word!r}:\n"
                            + "".join(self.stderr[-30:]))
            if line.startswith(word):
                return line

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(TIMEOUT)


def test_sigkill_during_publication_loses_and_duplicates_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    storage = tmp_path / "var"
    client = redis.Redis.from_url(redis_url)
    live = tmp_path / "live.toml"
    live.write_text(config_toml(storage, redis_url, retry_max_delay=0.5))
    dead = tmp_path / "dead.toml"  # nothing listens there: Redis is "down"
    dead.write_text(config_toml(storage, f"redis://127.0.0.1:{free_port()}/0",
                                retry_max_delay=0.5))
    children: list[Child] = []
    try:
        # 1. Thousands of CDRs journaled while Redis is unreachable; killed.
        child = Child(dead, "--produce", "4000")
        children.append(child)
        child.expect("produced")
        child.kill()
        assert client.xlen("mediacore:cdr") == 0

        # 2. Replay with Redis, producing 2,000 more; killed mid-publication.
        child = Child(live, "--produce", "2000", "--first", "4000", "--pace", "0.001",
                      "--batch", "20")
        children.append(child)
        child.expect("ready")
        wait_until(lambda: client.xlen("mediacore:cdr") >= 1500, "1,500 CDRs in the stream",
                   interval=0.005)
        child.kill()
        after_first_kill = client.xlen("mediacore:cdr")

        # 3. Killed again in the middle of the replay.
        child = Child(live, "--batch", "20")
        children.append(child)
        child.expect("ready")
        wait_until(lambda: client.xlen("mediacore:cdr") >= after_first_kill + 1000,
                   "1,000 more CDRs in the stream", interval=0.005)
        child.kill()

        # 4. Left to finish, then stopped cleanly.
        child = Child(live)
        children.append(child)
        child.expect("published")
        assert child.terminate() == 0

        # 5. Without its cursor, a start replays the whole journal: Redis drops it all.
        (journal_dir(storage, "test-node") / "cursor.json").unlink()
        child = Child(live)
        children.append(child)
        child.expect("published")
        assert child.terminate() == 0
        replay = dict(item.split("=") for item in child.expect("closed").split()[1:])
    finally:
        for child in children:
            child.kill()

    journal = [e.data["call_id"]
               for e in read_entries(journal_dir(storage, "test-node"), types=("cdr",))]
    assert len(journal) == len(set(journal)), "a CDR is in the journal twice"
    assert len(journal) >= 4000 + 1
    listed = subprocess.run(
        [sys.executable, "-m", "mediacore", "cdr", "list", "--format", "json", "-c", str(live)],
        capture_output=True, text=True, timeout=TIMEOUT, check=True, cwd=REPO,
    )
    assert [c["call_id"] for c in json.loads(listed.stdout)] == journal
    stream = [fields[b"call_id"].decode()
              for _, fields in client.xrange("mediacore:cdr", count=1_000_000)]
    assert len(stream) == len(set(stream)), "a CDR was published twice"
    assert sorted(stream) == sorted(journal)
    assert client.xlen("mediacore:cdr") == len(journal)
    assert all(client.hexists("mediacore:seen:test-node", f"cdr:{c}") for c in journal[:50])
    assert replay == {"replayed": str(len(journal)), "published": "0",
                      "duplicates": str(len(journal))}


def test_a_second_server_on_the_same_storage_is_refused(
    redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "m.toml"
    config.write_text(config_toml(tmp_path / "var", redis_url))
    first = Child(config)
    try:
        first.expect("ready")
        second = subprocess.run([sys.executable, str(CHILD), str(config)], capture_output=True,
                                text=True, timeout=TIMEOUT, cwd=REPO, check=False)
        assert second.returncode != 0
        assert (f"storage dir {tmp_path / 'var'} is already used by a mediacore process with "
                f"records.node 'test-node' (pid {first.process.pid}") in second.stderr
        assert "must each have their own records.node" in second.stderr
    finally:
        first.kill()
