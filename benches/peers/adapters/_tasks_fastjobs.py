"""fastjobs task bodies for the peer benchmark (imported by `fastjobs worker _tasks_fastjobs`)."""

import os
import time

import redis

import fastjobs

_r = None


def _client():
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _r


class BenchNoop(fastjobs.Job[dict, None]):
    queue = "bench"

    def process(self, p: dict) -> None:
        _client().incr("bench:done")


class BenchLat(fastjobs.Job[dict, None]):
    queue = "bench"

    def process(self, p: dict) -> None:
        r = _client()
        r.rpush("bench:lat", time.time())
        r.incr("bench:done")


class BenchLate(fastjobs.Job[dict, None]):
    queue = "bench"

    def process(self, p: dict) -> None:
        r = _client()
        r.rpush("bench:late", f"{p['i']} {time.time()}")
        r.incr("bench:done")
