"""RQ task bodies for the peer benchmark (imported by the RQ worker process)."""

import os
import time

import redis

from _w2p import burn

_r = None


def _client():
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _r


def noop(p):
    _client().incr("bench:done")


def cpu(p):
    burn()
    _client().incr("bench:done")


def lat(p):
    r = _client()
    r.rpush("bench:lat", time.time())
    r.incr("bench:done")


def late(p):
    r = _client()
    r.rpush("bench:late", f"{p['i']} {time.time()}")
    r.incr("bench:done")
