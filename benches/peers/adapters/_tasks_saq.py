"""SAQ task bodies and worker entry point for the peer benchmark.

The worker process runs ``python -c "import _tasks_saq; _tasks_saq.run_worker()"`` with
BENCH_REDIS_URL (and the tuning variables below) in its environment; in W2P, SAQ's own
``saq _tasks_saq.settings --workers N``.
SAQ passes job arguments as keyword arguments: every job carries its payload as ``p``.
"""

import asyncio
import os
import time

import redis.asyncio as aioredis

from _common_async import die_with_parent, env_int
from _w2p import burn

_r = None


def _client():
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _r


async def noop(ctx, *, p):
    await _client().incr("bench:done")


async def cpu(ctx, *, p):
    burn()
    await _client().incr("bench:done")


async def lat(ctx, *, p):
    r = _client()
    await r.rpush("bench:lat", time.time())
    await r.incr("bench:done")


async def late(ctx, *, p):
    r = _client()
    await r.rpush("bench:late", f"{p['i']} {time.time()}")
    await r.incr("bench:done")


CONCURRENCY = env_int("SAQ_CONCURRENCY", 10)


def settings():
    """The worker settings of `saq _tasks_saq.settings`, called in each worker process."""
    die_with_parent()
    from saq import Queue

    return {"queue": Queue.from_url(os.environ["BENCH_REDIS_URL"]), "functions": [noop, cpu, lat, late],
            "concurrency": CONCURRENCY}


def run_worker():
    die_with_parent()
    from saq import Queue, Worker

    queue = Queue.from_url(os.environ["BENCH_REDIS_URL"])
    worker = Worker(queue=queue, functions=[noop, lat, late], concurrency=CONCURRENCY)

    async def go():
        try:
            await queue.connect()
            await worker.start()
        finally:
            await queue.disconnect()

    asyncio.run(go())
