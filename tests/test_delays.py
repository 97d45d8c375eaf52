"""Delayed jobs on a real Redis: promoted in due order, on time, durable while no worker
runs (and then run oldest first), through every dispatch path."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import fastjobs

from .apps.jobs import Stamp, stamps
from .conftest import eventually
from .resp import Redis


def _order(redis: Redis, prefix: str) -> list[int]:
    return [int(r[0].split(":")[1]) if ":" in r[0] else -1 for r in stamps(redis, prefix)]


def test_delayed_jobs_are_promoted_in_due_order(start_worker: Any, redis: Redis, prefix: str) -> None:
    start_worker(queues=["stamps"], concurrency=1)
    delays = list(range(20))
    random.Random(7).shuffle(delays)
    # Dispatched shuffled, due 50 ms apart: at fixed times, since a delay counts from the
    # write, and a store's first writes (PostgreSQL's: each connection's first call of a
    # function) can take longer than the 50 ms between two jobs.
    base = datetime.now(timezone.utc) + timedelta(seconds=0.4)
    for d in delays:
        Stamp.dispatch(d).at(base + timedelta(seconds=d * 0.05)).job_id(f"due:{d:02d}").send()
    eventually(lambda: len(stamps(redis, prefix)) == 20)
    assert _order(redis, prefix) == list(range(20))


def test_jobs_that_fell_due_without_a_worker_run_oldest_first(start_worker: Any, redis: Redis, prefix: str) -> None:
    base = datetime.now(timezone.utc) + timedelta(seconds=0.1)  # fixed times: see above
    for d in [5, 1, 4, 2, 3, 0]:
        Stamp.dispatch(d).at(base + timedelta(seconds=d * 0.02)).job_id(f"old:{d}").send()
    time.sleep(0.6)  # all due, nobody running
    assert fastjobs.Queue("stamps").counts()["delayed"] == 6
    start_worker(queues=["stamps"], concurrency=1)
    eventually(lambda: len(stamps(redis, prefix)) == 6)
    assert _order(redis, prefix) == [0, 1, 2, 3, 4, 5]


def test_a_delayed_job_starts_on_time(start_worker: Any, redis: Redis, prefix: str) -> None:
    start_worker(queues=["stamps"])
    due = time.time() * 1000 + 500
    Stamp.dispatch(None).at(datetime.fromtimestamp(due / 1000, timezone.utc)).send()
    [(_id, _pid, started)] = eventually(lambda: stamps(redis, prefix))
    assert due <= started < due + 250  # never early; late by scheduling noise only


def test_delays_through_bulk_paths_and_at_in_the_past(start_worker: Any, redis: Redis, prefix: str) -> None:
    Stamp.dispatch_many([1, 2, 3], delay="300ms")
    fastjobs.BulkDispatcher([Stamp.dispatch(4).delay(timedelta(milliseconds=300)),
                             Stamp.dispatch(5).at(datetime.now(timezone.utc) - timedelta(days=1))]).dispatch()
    counts = fastjobs.Queue("stamps").counts()
    assert counts["delayed"] == 4 and counts["waiting"] == 1  # at() in the past means now
    start_worker(queues=["stamps"])
    eventually(lambda: len(stamps(redis, prefix)) == 5)


@pytest.mark.redis_only
def test_a_delay_of_years_is_kept(redis: Redis, prefix: str) -> None:
    h = Stamp.dispatch(None).delay(timedelta(days=3 * 365)).send()
    assert h.status() == "delayed"
    due = float(redis("ZSCORE", f"{prefix}:{{stamps}}:delayed", h.id))
    assert abs(due / 1000 - (time.time() + 3 * 365 * 86400)) < 5


def test_no_delayed_job_starts_before_the_moment_it_was_asked_for(start_worker: Any, redis: Redis, prefix: str) -> None:
    # Due times are kept to the µs and rounded up: measured from just before each dispatch (a
    # lower bound of the moment Redis wrote it), no run starts early, by any dispatch path.
    rng = random.Random(11)
    start_worker(queues=["stamps"], concurrency=4)
    asked: dict[str, float] = {}
    for i in range(150):
        delay = rng.uniform(0.05, 0.8)
        before = time.time()
        h = Stamp.dispatch(i).delay(delay).job_id(f"early:{i}").send()
        asked[h.id] = (before + delay) * 1000
    for i in range(50):
        at = datetime.now(timezone.utc) + timedelta(seconds=rng.uniform(0.05, 0.8))
        h = Stamp.dispatch(i).at(at).job_id(f"at:{i}").send()
        asked[h.id] = at.timestamp() * 1000
    before = time.time()
    bulk = Stamp.dispatch_many(list(range(100)), delay=0.3)
    asked.update({job_id: (before + 0.3) * 1000 for job_id in bulk})
    eventually(lambda: len(stamps(redis, prefix)) == len(asked), timeout=20)
    early = [(job_id, asked[job_id] - started) for job_id, _pid, started in stamps(redis, prefix) if started < asked[job_id]]
    assert early == [], early  # (job id, ms early)
