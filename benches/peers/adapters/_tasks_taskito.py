"""taskito tasks and worker entry point for the peer benchmark (see ../CONTRACT.md).

Imported by the adapter (producer side) and run as the worker process:
``python _tasks_taskito.py`` with BENCH_REDIS_URL and the TASKITO_* tuning variables below
in the environment. The queue uses taskito's Redis storage backend on the bench database.
"""

import os
import time

import redis
from taskito import Queue

from _rustq_common import env_int, worker_guard
from _w2p import burn

worker_guard()

URL = os.environ["BENCH_REDIS_URL"]

# Worker tuning (the adapter passes its chosen values in the environment).
THREADS = env_int("TASKITO_THREADS", 8)
POLL_MS = env_int("TASKITO_POLL_MS", 50)
BATCH = env_int("TASKITO_BATCH", 1)
POOL = env_int("TASKITO_POOL", 0) or None  # storage connection pool size (taskito default 10)

queue = Queue(
    backend="redis",
    db_url=URL,
    workers=THREADS,
    scheduler_poll_interval_ms=POLL_MS,
    scheduler_batch_size=BATCH,
    pool_size=POOL,
)

_r = redis.Redis.from_url(URL)  # one client per worker process (thread-safe pool)


@queue.task(max_retries=0)
def noop(p):
    _r.incr("bench:done")


@queue.task(max_retries=0)
def cpu(p):
    burn()
    _r.incr("bench:done")


@queue.task(max_retries=0)
def lat(p):
    _r.rpush("bench:lat", time.time())
    _r.incr("bench:done")


@queue.task(max_retries=0)
def late(p):
    _r.rpush("bench:late", f"{p['i']} {time.time()}")
    _r.incr("bench:done")


if __name__ == "__main__":
    queue.run_worker()
