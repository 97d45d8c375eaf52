"""ArdiQ tasks for the peer benchmark (see ../CONTRACT.md).

Imported by the adapter (producer side) and by the worker process, which the adapter starts
as ``python -m ardiq run _tasks_ardiq:app --quiet`` with BENCH_REDIS_URL and the ARDIQ_*
tuning variables below in the environment.

ArdiQ's Rust core runs the worker loop and calls one async callback per task: an async task
runs right on the worker's event loop, a sync one in a thread (asyncio.to_thread). The tasks
here are async by default (ARDIQ_ASYNC=1), with a redis-py asyncio client, which is the
faster of the two for a one-INCR body; ARDIQ_ASYNC=0 makes them sync with a redis-py client.
"""

import os
import time

from ardiq import Ardiq

from _rustq_common import env_int, worker_guard
from _w2p import burn

worker_guard()

URL = os.environ["BENCH_REDIS_URL"]
CONCURRENCY = env_int("ARDIQ_CONCURRENCY", 16)
PREFETCH = env_int("ARDIQ_PREFETCH", 0) or CONCURRENCY * 2
POLL_BLOCK_MS = env_int("ARDIQ_POLL_BLOCK_MS", 50)
ASYNC = env_int("ARDIQ_ASYNC", 1)

app = Ardiq(
    URL,
    queue_name="bench",
    concurrency=CONCURRENCY,
    prefetch=PREFETCH,
    poll_block_ms=POLL_BLOCK_MS,
    result_ttl_ms=0,  # 0 = results dropped at once
)

if ASYNC:
    import redis.asyncio as aioredis

    _r = None

    def _client():
        global _r
        if _r is None:  # created on first use, inside the worker's event loop
            # one connection per task in flight at most (redis-py's asyncio pool would
            # otherwise raise MaxConnectionsError past its default cap)
            _r = aioredis.Redis.from_url(URL, max_connections=CONCURRENCY + 8)
        return _r

    @app.task(max_retries=0)
    async def noop(p):
        await _client().incr("bench:done")

    @app.task(max_retries=0)
    async def cpu(p):
        burn()
        await _client().incr("bench:done")

    @app.task(max_retries=0)
    async def lat(p):
        r = _client()
        await r.rpush("bench:lat", time.time())
        await r.incr("bench:done")

    @app.task(max_retries=0)
    async def late(p):
        r = _client()
        await r.rpush("bench:late", f"{p['i']} {time.time()}")
        await r.incr("bench:done")

else:
    import redis

    _r = redis.Redis.from_url(URL)

    @app.task(max_retries=0)
    def noop(p):
        _r.incr("bench:done")

    @app.task(max_retries=0)
    def cpu(p):
        burn()
        _r.incr("bench:done")

    @app.task(max_retries=0)
    def lat(p):
        _r.rpush("bench:lat", time.time())
        _r.incr("bench:done")

    @app.task(max_retries=0)
    def late(p):
        _r.rpush("bench:late", f"{p['i']} {time.time()}")
        _r.incr("bench:done")
