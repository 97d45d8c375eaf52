"""fastjobs task bodies for the peer benchmark (imported by `fastjobs worker _tasks_fastjobs`)."""

import os
import time

import redis

import fastjobs
from _w2p import burn

_r = None


def _client():
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _r


_ar = None


def _async_client():
    global _ar
    if _ar is None:
        import redis.asyncio

        _ar = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS_URL"], max_connections=256)
    return _ar


if os.environ.get("FASTJOBS_BENCH_ASYNC") == "1":
    # The drain's best setting: many INCRs in flight at once on the worker's event loop.

    class BenchNoop(fastjobs.Job[dict, None]):
        queue = "bench"

        async def process(self, p: dict) -> None:
            await _async_client().incr("bench:done")

else:

    class BenchNoop(fastjobs.Job[dict, None]):  # type: ignore[no-redef]
        queue = "bench"

        def process(self, p: dict) -> None:
            _client().incr("bench:done")


class BenchCpu(fastjobs.Job[dict, None]):
    queue = "bench"

    def process(self, p: dict) -> None:
        burn()
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
