"""rrq handlers for the peer benchmark (see ../CONTRACT.md).

rrq's worker is a Rust orchestrator (``rrq worker run``) that polls Redis and sends each job
over a localhost TCP socket to runner processes; the Python runner (``rrq-runner --settings
_tasks_rrq.runner_settings``) runs these async handlers. The adapter writes the TOML config
that starts exactly one runner process.
"""

import os
import time

import redis.asyncio as aioredis
from rrq import PythonRunnerSettings, Registry

from _rustq_common import worker_guard
from _w2p import burn

worker_guard()

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

_r = None


def _client():
    global _r
    if _r is None:  # created on first use, inside the runner's event loop
        _r = aioredis.Redis.from_url(URL, max_connections=128)
    return _r


async def noop(request):
    await _client().incr("bench:done")


async def cpu(request):
    burn()
    await _client().incr("bench:done")


async def lat(request):
    r = _client()
    await r.rpush("bench:lat", time.time())
    await r.incr("bench:done")


async def late(request):
    r = _client()
    await r.rpush("bench:late", f"{request.params['i']} {time.time()}")
    await r.incr("bench:done")


registry = Registry()
registry.register("noop", noop)
registry.register("cpu", cpu)
registry.register("lat", lat)
registry.register("late", late)

runner_settings = PythonRunnerSettings(registry=registry)
