"""arq task bodies and worker entry point for the peer benchmark.

The worker process runs ``python -c "import _tasks_arq; _tasks_arq.run_worker()"`` with
BENCH_REDIS_URL (and the tuning variables below) in its environment.
"""

import os
import time

import redis.asyncio as aioredis

from _common_async import die_with_parent, env_float, env_int

_r = None


def _client():
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _r


async def noop(ctx, p):
    await _client().incr("bench:done")


async def lat(ctx, p):
    r = _client()
    await r.rpush("bench:lat", time.time())
    await r.incr("bench:done")


async def late(ctx, p):
    r = _client()
    await r.rpush("bench:late", f"{p['i']} {time.time()}")
    await r.incr("bench:done")


# Worker settings (the adapter passes its chosen values in the environment).
MAX_JOBS = env_int("ARQ_MAX_JOBS", 100)
POLL_DELAY = env_float("ARQ_POLL_DELAY", 0.5)
KEEP_RESULT = env_float("ARQ_KEEP_RESULT", 0)


def run_worker():
    die_with_parent()
    from arq.connections import RedisSettings
    from arq.worker import Worker

    w = Worker(
        functions=[noop, lat, late],
        redis_settings=RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"]),
        max_jobs=MAX_JOBS,
        poll_delay=POLL_DELAY,
        keep_result=KEEP_RESULT,
        log_results=False,
        handle_signals=True,
    )
    w.run()
