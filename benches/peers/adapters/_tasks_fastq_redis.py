"""fastq-redis handler and worker entry point for the peer benchmark (see ../CONTRACT.md).

The worker process is ``python _tasks_fastq_redis.py <task>`` with BENCH_REDIS_URL in the
environment. FastQ's Worker runs one handler for a whole queue, so each kind of task
(noop / lat / late) gets a queue of its own and the worker serves the one it is told to.
"""

import json
import os
import sys
import time
from urllib.parse import urlparse

import redis

from _rustq_common import env_int, worker_guard

worker_guard()

URL = os.environ["BENCH_REDIS_URL"]
THREADS = env_int("FASTQ_THREADS", 1)


def host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 6379


def queue_name(task: str) -> str:
    return f"bench_{task}"


def main(task: str) -> None:
    import fastq

    fastq.set_log_level(2)  # WARN: no per-job debug/info lines
    r = redis.Redis.from_url(URL)  # one client per worker process

    if task == "noop":
        def handler(job):
            r.incr("bench:done")
    elif task == "lat":
        def handler(job):
            r.rpush("bench:lat", time.time())
            r.incr("bench:done")
    elif task == "late":
        def handler(job):
            r.rpush("bench:late", f"{json.loads(job['payload'])['i']} {time.time()}")
            r.incr("bench:done")
    else:
        raise SystemExit(f"unknown task {task!r}")

    host, port = host_port(URL)
    q = fastq.Queue(queue_name(task), host, port)
    fastq.Worker(q, handler, THREADS).start()


if __name__ == "__main__":
    main(sys.argv[1])
