"""BullMQ (Python) processor and worker entry point for the peer benchmark.

The worker process runs ``python -c "import _tasks_bullmq; _tasks_bullmq.run_worker()"`` with
BENCH_REDIS_URL (and the tuning variables below) in its environment. One ``bullmq.Worker`` on
queue ``bench``; the processor dispatches on the job name (noop / lat / late).
"""

import asyncio
import os
import signal
import time

import redis.asyncio as aioredis

from _common_async import die_with_parent, env_int

QUEUE = "bench"
_r = None


def _client():
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _r


async def noop(p):
    await _client().incr("bench:done")


async def lat(p):
    r = _client()
    await r.rpush("bench:lat", time.time())
    await r.incr("bench:done")


async def late(p):
    r = _client()
    await r.rpush("bench:late", f"{p['i']} {time.time()}")
    await r.incr("bench:done")


TASKS = {"noop": noop, "lat": lat, "late": late}


async def process(job, token):
    await TASKS[job.name](job.data)


CONCURRENCY = env_int("BULLMQ_CONCURRENCY", 1)


def run_worker():
    die_with_parent()
    from bullmq import Worker

    async def go():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = Worker(
            QUEUE,
            process,
            {"connection": os.environ["BENCH_REDIS_URL"], "concurrency": CONCURRENCY},
        )
        try:
            await stop.wait()
        finally:
            await worker.close()

    asyncio.run(go())
