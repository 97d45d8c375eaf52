"""streaq worker object, task bodies and worker entry point for the peer benchmark.

Both the adapter (producer) and the worker process import this module (streaq enqueues through
the registered task objects). BENCH_REDIS_URL must be set before the import.
The worker process runs ``python -c "import _tasks_streaq; _tasks_streaq.run_worker()"``;
in W2P, streaq's own ``streaq run _tasks_streaq:worker --workers N``.
Tasks are registered with ``ttl=0`` (no result stored) and ``silent=True`` (no per-task log
line).
"""

import os
import time

import redis.asyncio as aioredis
from streaq import Worker

from _common_async import die_with_parent, env_int
from _w2p import burn

URL = os.environ["BENCH_REDIS_URL"]
CONCURRENCY = env_int("STREAQ_CONCURRENCY", 16)
PREFETCH = env_int("STREAQ_PREFETCH", 0) or None  # None: streaq's default (= concurrency)

worker = Worker(redis_url=URL, concurrency=CONCURRENCY, prefetch=PREFETCH)

_r = None


def _client():
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(URL)
    return _r


@worker.task(ttl=0, silent=True)
async def noop(p):
    await _client().incr("bench:done")


@worker.task(ttl=0, silent=True)
async def cpu(p):
    burn()
    await _client().incr("bench:done")


@worker.task(ttl=0, silent=True)
async def lat(p):
    r = _client()
    await r.rpush("bench:lat", time.time())
    await r.incr("bench:done")


@worker.task(ttl=0, silent=True)
async def late(p):
    r = _client()
    await r.rpush("bench:late", f"{p['i']} {time.time()}")
    await r.incr("bench:done")


def run_worker():
    die_with_parent()
    worker.run_sync()
