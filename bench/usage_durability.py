"""Usage durability: SIGKILL Redis under load, restart it from its append-only file, count the records lost.

    python bench/usage_durability.py --rate 2000 --seconds 10 --kill-at 5 --down 1 --appendfsync everysec always

What it drives, honestly: not the whole gateway but its usage-emit path, ``gateway.usage.append`` (an XADD through
the gateway's own pipelined RESP client, ``gateway.store.fredis``), at ``--rate`` records/s from one asyncio loop,
each record in the gateway's shape (``bench/usage_throughput.py``). A record whose XADD was acknowledged counts as a
request answered and metered; one whose XADD failed (Redis down) is counted apart, since the gateway answers 503
while Redis is unreachable. Meanwhile one ingester process (``metering.ingestion.ingest_batch``) inserts records.
At ``--kill-at`` seconds Redis gets SIGKILL; ``--down`` seconds later it is restarted on the same folder, loading
its append-only file. After the feed ends the stream is drained and the rows in PostgreSQL are compared with the
acknowledged ids: **lost** = acknowledged but never stored, also in seconds of traffic at ``--rate``.

A SIGKILL ends the Redis process, not the machine: with ``everysec`` the written AOF is in the OS page cache, which
survives the process, so a process crash loses nothing; only a machine crash (power, kernel) loses the last second
not yet fsynced, which this bench cannot provoke. ``always`` fsyncs before acknowledging and survives both.
Runs its own ``redis-server`` (``--redis-port``, temporary folder) and uses ``DATABASE_URL`` (default database
``maas_usage_bench``, created and migrated on first use).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import usage_throughput as ut  # noqa: E402  (the same world, records and Redis set-up)


def _ingester(stop) -> None:
    ut.django_setup(None)
    from metering.ingestion import ingest_batch

    while not stop.is_set():
        try:
            ingest_batch(consumer="durability", count=500, block_ms=200)
        except Exception:  # Redis is down for a moment: as manage.py ingest_usage does, wait and go on
            time.sleep(0.2)


async def feed(world: dict, rate: int, seconds: float, on_tick) -> tuple[list[str], int]:
    import orjson

    from gateway import usage

    acked: list[str] = []
    failed = 0
    t0, sent = time.monotonic(), 0

    async def one(i: int) -> None:
        nonlocal failed
        raw = ut.record(world, i, time.time())
        record = orjson.loads(raw)
        try:
            await usage.append(record)
            acked.append(record["id"])
        except Exception:
            failed += 1

    tasks: set[asyncio.Task] = set()
    while (elapsed := time.monotonic() - t0) < seconds:
        on_tick(elapsed)
        due = int(elapsed * rate) - sent
        for i in range(sent, sent + max(due, 0)):
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent += max(due, 0)
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    return acked, failed


def run_once(args, world: dict, appendfsync: str) -> dict:
    from django.db import connection

    from metering.ingestion import ingest_all
    from metering.models import UsageRecord

    ut.clear_usage()
    connection.close()
    directory = Path(tempfile.mkdtemp(prefix="usage-durability-"))
    server = {"p": ut.start_redis(args.redis_port, directory, appendfsync)}
    stop = mp.Event()
    ingester = mp.Process(target=_ingester, args=(stop,))
    ingester.start()
    state = {"killed": None, "restarted": None}

    def on_tick(elapsed: float) -> None:
        if state["killed"] is None and elapsed >= args.kill_at:
            os.kill(server["p"].pid, signal.SIGKILL)
            server["p"].wait()
            state["killed"] = elapsed
        elif state["killed"] is not None and state["restarted"] is None and elapsed >= args.kill_at + args.down:
            server["p"] = ut.start_redis(args.redis_port, directory, appendfsync)
            state["restarted"] = elapsed

    try:
        acked, failed = asyncio.run(feed(world, args.rate, args.seconds, on_tick))
        stop.set()
        ingester.join(timeout=30)
        ingest_all(consumer="durability-drain")
        stored = {str(pk) for pk in UsageRecord.objects.values_list("id", flat=True)}
    finally:
        server["p"].terminate()
        server["p"].wait()
        shutil.rmtree(directory, ignore_errors=True)
    lost = len(set(acked) - stored)
    return {"appendfsync": appendfsync, "acked": len(acked), "failed": failed, "stored": len(stored), "lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--kill-at", type=float, default=5)
    parser.add_argument("--down", type=float, default=1)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--appendfsync", nargs="+", default=["off", "everysec", "always"], help="off: no persistence")
    parser.add_argument("--redis-port", type=int, default=6392)
    args = parser.parse_args()
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{args.redis_port}/0"
    directory = Path(tempfile.mkdtemp(prefix="usage-durability-setup-"))
    setup_redis = ut.start_redis(args.redis_port, directory)
    try:
        ut.prepare_database(None)
        ut.django_setup(None)
        world = ut.setup_world(args.orgs)
    finally:
        setup_redis.terminate()
        setup_redis.wait()
        shutil.rmtree(directory, ignore_errors=True)
    for mode in args.appendfsync:
        r = run_once(args, world, mode)
        print(
            f"appendfsync {mode}: {args.rate}/s for {args.seconds:.0f} s, SIGKILL at {args.kill_at:.0f} s, down"
            f" {args.down:.1f} s: acknowledged {r['acked']}, refused while down {r['failed']}, stored {r['stored']},"
            f" lost {r['lost']} ({r['lost'] / args.rate:.2f} s of traffic)",
            flush=True,
        )


if __name__ == "__main__":
    main()
