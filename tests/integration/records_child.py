"""Child process for test_records_crash.py: a RecordsService that gets SIGKILLed.

    python records_child.py CONFIG [--produce N] [--first K] [--pace SECONDS]
                            [--batch B]

Starts a RecordsService on CONFIG, prints ``ready``, journals CDRs
``call-K`` .. ``call-(K+N-1)`` (one every ``--pace`` seconds), prints
``produced`` once all are durable, ``published`` once Redis has everything,
then waits. SIGTERM closes the service cleanly (``closed``, exit 0); the
parent's SIGKILL is the point of the test. Gives up after a minute and a
half in case the parent is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mediacore.config import load_config
from mediacore.records import RecordsService
from tests.integration.records_helpers import make_cdr

GIVE_UP_AFTER = 90.0


async def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    service = RecordsService(config, publish_batch=args.batch, lag_log_interval=1.0)
    await service.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    futures = []
    for i in range(args.first, args.first + args.produce):
        futures.append(service.record_cdr(make_cdr(i)))
        if args.pace:
            await asyncio.sleep(args.pace)
    await asyncio.gather(*futures)
    print("produced", flush=True)
    if config.redis is not None:
        await service.wait_published()
        print("published", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), GIVE_UP_AFTER)
    except TimeoutError:
        return 1
    stats = service.stats()
    await service.close()
    print(f"closed replayed={stats.replayed} published={stats.published} "
          f"duplicates={stats.duplicates}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--produce", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=500)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(uvloop.run(main(parser.parse_args())))
