"""Taskiq (taskiq-redis RedisStreamBroker) broker, task bodies and worker / scheduler entry
points for the peer benchmark.

Both the adapter (producer) and the worker import this module, so taskiq derives the same task
names ("_tasks_taskiq:noop", ...). BENCH_REDIS_URL must be set before the import.
The worker process runs ``python -c "import _tasks_taskiq; _tasks_taskiq.run_worker()"``; the
scheduler process (W5 only: taskiq's delay API is a schedule source read by a scheduler)
runs ``... _tasks_taskiq.run_scheduler()``.
"""

import asyncio
import os
import time
from datetime import timedelta

import redis.asyncio as aioredis
from taskiq import TaskiqScheduler
from taskiq_redis import ListRedisScheduleSource, RedisStreamBroker

from _common_async import die_with_parent, env_int
from _w2p import burn

URL = os.environ["BENCH_REDIS_URL"]

# Connection pool: the producer runs up to TASKIQ_ENQUEUE_CONCURRENCY kiq() calls at once.
broker = RedisStreamBroker(
    URL,
    max_connection_pool_size=env_int("TASKIQ_POOL_SIZE", 100),
    xread_count=env_int("TASKIQ_XREAD_COUNT", 100),
)
schedule_source = ListRedisScheduleSource(URL)
scheduler = TaskiqScheduler(broker, sources=[schedule_source])

_r = None


def _client():
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(URL)
    return _r


@broker.task
async def noop(p):
    await _client().incr("bench:done")


@broker.task
async def cpu(p):
    burn()
    await _client().incr("bench:done")


@broker.task
async def lat(p):
    r = _client()
    await r.rpush("bench:lat", time.time())
    await r.incr("bench:done")


@broker.task
async def late(p):
    r = _client()
    await r.rpush("bench:late", f"{p['i']} {time.time()}")
    await r.incr("bench:done")


MAX_ASYNC_TASKS = env_int("TASKIQ_MAX_ASYNC_TASKS", 100)
MAX_PREFETCH = env_int("TASKIQ_MAX_PREFETCH", 0)


def run_worker():
    """One worker process: taskiq's programmatic receiver (what `taskiq worker` runs in each
    child), without the CLI's process manager and per-task INFO logging."""
    die_with_parent()
    from taskiq.api import run_receiver_task

    async def go():
        broker.is_worker_process = True
        await broker.startup()
        await run_receiver_task(
            broker,
            max_async_tasks=MAX_ASYNC_TASKS,
            max_prefetch=MAX_PREFETCH,
            run_startup=False,
        )

    asyncio.run(go())


def run_scheduler():
    """The scheduler (what `taskiq scheduler _tasks_taskiq:scheduler --update-interval 1`
    runs): reads due schedules every second and kicks them to the broker."""
    die_with_parent()
    from taskiq.api import run_scheduler_task

    asyncio.run(
        run_scheduler_task(
            scheduler,
            run_startup=True,
            interval=timedelta(seconds=env_int("TASKIQ_SCHEDULER_UPDATE_S", 0)),
        )
    )
