"""mayu tasks for the peer benchmark (see ../CONTRACT.md).

Imported by the adapter (producer side) and by the worker process, which the adapter starts
as ``python -m mayu worker _tasks_mayu:app --mode thread --processes 1 ...`` with
BENCH_REDIS_URL and MAYU_ASYNC in the environment.

The tasks are sync by default (run on the worker's threads, redis-py client); MAYU_ASYNC=1
makes them async (run on the worker's event-loop thread, redis.asyncio client).
"""

import os
import time

from mayu import App

from _rustq_common import env_int, worker_guard
from _w2p import burn

worker_guard()

URL = os.environ["BENCH_REDIS_URL"]
ASYNC = env_int("MAYU_ASYNC", 0)

# result_ttl=None (the default): results are not stored.
app = App(broker=URL, default_queue="bench", max_retries=0)

if ASYNC:
    import redis.asyncio as aioredis

    _r = None

    def _client():
        global _r
        if _r is None:  # created on first use, inside the worker's event loop
            _r = aioredis.Redis.from_url(URL, max_connections=256)
        return _r

    @app.task(name="noop")
    async def noop(p):
        await _client().incr("bench:done")

    @app.task(name="cpu")
    async def cpu(p):
        burn()
        await _client().incr("bench:done")

    @app.task(name="lat")
    async def lat(p):
        r = _client()
        await r.rpush("bench:lat", time.time())
        await r.incr("bench:done")

    @app.task(name="late")
    async def late(p):
        r = _client()
        await r.rpush("bench:late", f"{p['i']} {time.time()}")
        await r.incr("bench:done")

else:
    import redis

    _r = redis.Redis.from_url(URL)  # one client per worker process (thread-safe pool)

    @app.task(name="noop")
    def noop(p):
        _r.incr("bench:done")

    @app.task(name="cpu")
    def cpu(p):
        burn()
        _r.incr("bench:done")

    @app.task(name="lat")
    def lat(p):
        _r.rpush("bench:lat", time.time())
        _r.incr("bench:done")

    @app.task(name="late")
    def late(p):
        _r.rpush("bench:late", f"{p['i']} {time.time()}")
        _r.incr("bench:done")
