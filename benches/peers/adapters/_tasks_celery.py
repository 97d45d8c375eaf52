"""Celery app and task bodies for the peer benchmark (imported by the Celery worker process
and by the adapter). Broker: Redis; no result backend (results ignored)."""

import os
import time

import redis
from celery import Celery

from _w2p import burn

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue="bench",
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("PEER_CELERY_PREFETCH", "4")),
    worker_disable_rate_limits=True,
)

_r = None


def _client():
    global _r
    if _r is None:
        _r = redis.Redis.from_url(URL)
    return _r


@app.task(name="bench.noop")
def noop(p):
    _client().incr("bench:done")


@app.task(name="bench.cpu")
def cpu(p):
    burn()
    _client().incr("bench:done")


@app.task(name="bench.lat")
def lat(p):
    r = _client()
    r.rpush("bench:lat", time.time())
    r.incr("bench:done")


@app.task(name="bench.late")
def late(p):
    r = _client()
    r.rpush("bench:late", f"{p['i']} {time.time()}")
    r.incr("bench:done")
