"""Task bodies of benches/pool.py (imported by `fastjobs worker _pool_tasks`): one redis-py
INCR of `bench:done`, after ~2 ms of pure-Python work for the CPU-bound body."""

import os

import redis

import fastjobs

SPIN = int(os.environ.get("BENCH_SPIN", "0"))  # loop turns of ~2 ms, calibrated by the bench
_r = None


def done() -> None:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    _r.incr("bench:done")


def spin(turns: int) -> int:
    x = 0
    for i in range(turns):
        x += i * i % 7
    return x


class Incr(fastjobs.Job[int, None]):
    queue = "bench"

    def process(self, p: int) -> None:
        done()


class Cpu(fastjobs.Job[int, None]):
    queue = "bench"

    def process(self, p: int) -> None:
        spin(SPIN)
        done()
