"""Runs: a bulk dispatch writes several records per list element (record.rs), and every reserve
splits them back into records (common.lua pop_wait) — in order, with exact counts, through
small reserves, hand-overs to idle workers and singles dispatched in between."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastjobs import Queue, _core, config

from .apps.jobs import Echo, Stamp, stamps
from .conftest import eventually, waiting_records
from .test_delivery import key, record_id

# Runs are how the Redis store packs bulk jobs.
pytestmark = pytest.mark.redis_only


def test_bulk_dispatch_writes_runs_and_counts_every_job(redis: Any, prefix: str) -> None:
    res = Echo.dispatch_many([{"i": i, "s": "x" * 32} for i in range(1000)])
    elements = redis("LLEN", key(prefix, "default", "wait"))
    assert elements <= 1000 // 16 + 1, elements  # 16 small records per element
    assert Queue().size() == 1000 and Queue().counts()["waiting"] == 1000
    assert [record_id(r) for r in waiting_records(redis, prefix, "default")] == list(res)
    # A record past the run size stands alone: nothing is gained by grouping large ones.
    Echo.dispatch_many(["y" * 3000] * 40, queue="large")
    assert redis("LLEN", key(prefix, "large", "wait")) == 40 and Queue("large").size() == 40


def test_counts_stay_exact_while_reserves_split_runs(prefix: str, redis: Any) -> None:
    n = 1000
    Echo.dispatch_many(list(range(n)), queue="split")
    engine = _core.WorkerEngine(config.client(), ["split"], prefetch=7, lease=30.0)
    engine.start(scheduler=False)
    try:
        seen: list[int] = []
        while len(seen) < n:
            batch = engine.next_jobs(5, 10.0)
            assert batch, "the engine stopped handing out jobs"
            c = Queue("split").counts()
            # Every job is waiting, leased or done: none lost or counted twice by a split.
            assert c["waiting"] + c["active"] + c["completed"] == n, c
            for d in batch:
                seen.append(json.loads(d[7]))
                assert engine.complete(d[0], None)
        assert seen == list(range(n))
        engine.drain()
    finally:
        engine.stop_fetching()
        engine.close()
    eventually(lambda: Queue("split").counts()["completed"] == n)
    assert Queue("split").counts()["waiting"] == 0
    assert redis("EXISTS", key(prefix, "split", "runs")) == 0  # the counter goes with the last run


def test_small_prefetch_runs_every_job_once_in_dispatch_order(start_worker: Any, redis: Any, prefix: str) -> None:
    res = Stamp.dispatch_many(list(range(300)))
    start_worker(queues=["stamps"], concurrency=1, prefetch=7)
    eventually(lambda: len(stamps(redis, prefix)) == 300, timeout=30)
    assert [s[0] for s in stamps(redis, prefix)] == list(res)
    eventually(lambda: Queue("stamps").counts()["completed"] == 300)
    assert Queue("stamps").counts()["waiting"] == 0


def test_idle_worker_is_handed_the_head_of_a_run(start_worker: Any, redis: Any, prefix: str) -> None:
    start_worker(queues=["stamps"], concurrency=1)
    eventually(lambda: redis("ZCARD", key(prefix, "stamps", "idle")) == 1)
    res = Stamp.dispatch_many(list(range(100)))
    eventually(lambda: len(stamps(redis, prefix)) == 100, timeout=30)
    assert [s[0] for s in stamps(redis, prefix)] == list(res)
    done = dict(waiting=0, delayed=0, active=0, failed=0, completed=100, retried=0, stalled=0, cancelled=0, paused=False)
    eventually(lambda: Queue("stamps").counts() == done)
    assert redis("EXISTS", key(prefix, "stamps", "runs")) == 0


def test_singles_and_runs_keep_one_fifo_order(start_worker: Any, redis: Any, prefix: str) -> None:
    ids: list[str] = []
    for part in range(4):
        ids.append(Stamp.dispatch(f"single {part}").send().id)
        ids += list(Stamp.dispatch_many([f"bulk {part} {i}" for i in range(37)]))
    assert Queue("stamps").size() == len(ids) == 4 * 38
    start_worker(queues=["stamps"], concurrency=1, prefetch=3)
    eventually(lambda: len(stamps(redis, prefix)) == len(ids), timeout=30)
    assert [s[0] for s in stamps(redis, prefix)] == ids


def test_jobs_handed_back_on_stop_go_ahead_of_the_rest_of_their_run(start_worker: Any, redis: Any, prefix: str) -> None:
    res = Echo.dispatch_many(list(range(100)), queue="back")
    engine = _core.WorkerEngine(config.client(), ["back"], prefetch=10, lease=30.0)
    engine.start(scheduler=False)
    [first] = engine.next_jobs(1, 10.0)
    assert engine.complete(first[0], None)
    engine.stop_fetching()  # the prefetched jobs go back to the head, ahead of the run they came from
    engine.drain()
    engine.close()
    assert [record_id(r) for r in waiting_records(redis, prefix, "back")] == list(res)[1:]
    assert Queue("back").counts()["waiting"] == 99
    start_worker(queues=["back"])
    assert res.handle(99).wait_result(timeout=10) == 99
    eventually(lambda: Queue("back").counts()["completed"] == 100)


def test_a_run_count_left_over_an_empty_list_is_ignored_then_replaced(start_worker: Any, redis: Any, prefix: str) -> None:
    # The list deleted by hand (or evicted) while runs were waiting leaves their count behind:
    # it means nothing while the list is empty, and the next bulk write sets it afresh.
    Echo.dispatch_many(list(range(100)), queue="healed")
    redis("DEL", key(prefix, "healed", "wait"))
    assert int(redis("GET", key(prefix, "healed", "runs"))) > 0
    assert Queue("healed").counts()["waiting"] == 0
    res = Echo.dispatch_many(list(range(50)), queue="healed")
    elements = redis("LLEN", key(prefix, "healed", "wait"))
    assert int(redis("GET", key(prefix, "healed", "runs"))) == 50 - elements
    assert Queue("healed").counts()["waiting"] == 50
    start_worker(queues=["healed"])
    assert res.handle(49).wait_result(timeout=10) == 49
    eventually(lambda: Queue("healed").counts()["completed"] == 50)
    assert Queue("healed").counts()["waiting"] == 0
    assert redis("EXISTS", key(prefix, "healed", "runs")) == 0
