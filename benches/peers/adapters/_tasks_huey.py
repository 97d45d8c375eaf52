"""Huey instance and tasks for the peer benchmark (imported by the Huey consumer process and
by the adapter). RedisHuey, results not stored."""

import os
import time

import redis
from huey import RedisHuey

from _w2p import burn

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

huey = RedisHuey("bench", url=URL, results=False, utc=True)

_r = None


def _client():
    global _r
    if _r is None:
        _r = redis.Redis.from_url(URL)
    return _r


@huey.task(name="noop")
def noop(p):
    _client().incr("bench:done")


@huey.task(name="cpu")
def cpu(p):
    burn()
    _client().incr("bench:done")


@huey.task(name="lat")
def lat(p):
    r = _client()
    r.rpush("bench:lat", time.time())
    r.incr("bench:done")


@huey.task(name="late")
def late(p):
    r = _client()
    r.rpush("bench:late", f"{p['i']} {time.time()}")
    r.incr("bench:done")
