"""Dramatiq broker and actors for the peer benchmark (imported by the Dramatiq worker process
and by the adapter). Redis broker with Dramatiq's default middleware."""

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from _w2p import burn

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)

_r = None


def _client():
    global _r
    if _r is None:
        _r = redis.Redis.from_url(URL)
    return _r


@dramatiq.actor(queue_name="bench", actor_name="noop")
def noop(p):
    _client().incr("bench:done")


@dramatiq.actor(queue_name="bench", actor_name="cpu")
def cpu(p):
    burn()
    _client().incr("bench:done")


@dramatiq.actor(queue_name="bench", actor_name="lat")
def lat(p):
    r = _client()
    r.rpush("bench:lat", time.time())
    r.incr("bench:done")


@dramatiq.actor(queue_name="bench", actor_name="late")
def late(p):
    r = _client()
    r.rpush("bench:late", f"{p['i']} {time.time()}")
    r.incr("bench:done")
