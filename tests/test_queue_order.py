"""Queue order across a worker's queues: strict (a queue is read only when the ones before it
have nothing ready) and weighted (a random order drawn by weight at every reserve round)."""

from __future__ import annotations

from typing import Any

import pytest

import fastjobs

from .apps.jobs import Stamp, stamps
from .conftest import eventually


def _first_runs(redis: Any, prefix: str, n: int) -> list[str]:
    eventually(lambda: len(stamps(redis, prefix)) >= n, timeout=30)
    return [job_id for job_id, _pid, _ms in stamps(redis, prefix)[:n]]


def test_strict_order_drains_the_first_queue_first(start_worker: Any, redis: Any, prefix: str) -> None:
    high = set(Stamp.dispatch_many(list(range(300)), queue="high"))
    set(Stamp.dispatch_many(list(range(300)), queue="low"))
    start_worker(queues=["high", "low"], concurrency=1, prefetch=1)
    assert set(_first_runs(redis, prefix, 300)) == high


def test_weighted_order_serves_queues_by_weight(start_worker: Any, redis: Any, prefix: str) -> None:
    heavy = set(Stamp.dispatch_many(list(range(2_000)), queue="heavy"))
    light = set(Stamp.dispatch_many(list(range(2_000)), queue="light"))
    w = start_worker(queues={"heavy": 3, "light": 1}, concurrency=1, prefetch=1)
    first = _first_runs(redis, prefix, 800)
    from_heavy = sum(1 for j in first if j in heavy)
    from_light = sum(1 for j in first if j in light)
    print(f"weighted 3:1 -> {from_heavy}:{from_light} of the first 800 runs")
    assert from_heavy + from_light == 800
    assert 2.2 <= from_heavy / from_light <= 4.2, (from_heavy, from_light)  # 3:1, with the noise of 800 draws
    w.stop()


@pytest.mark.redis_only
def test_weighted_order_from_the_command_line(spawn_worker: Any, redis: Any, prefix: str) -> None:
    heavy = set(Stamp.dispatch_many(list(range(1_000)), queue="heavy"))
    Stamp.dispatch_many(list(range(1_000)), queue="light")
    w = spawn_worker("-q", "heavy,3", "-q", "light,1", "--concurrency", "1", "--prefetch", "1")
    first = _first_runs(redis, prefix, 400)
    from_heavy = sum(1 for j in first if j in heavy)
    assert 0.6 <= from_heavy / 400 <= 0.85, from_heavy
    w.proc.terminate()
    w.output()


def test_bad_weights_are_refused(spawn_worker: Any) -> None:
    with pytest.raises(ValueError, match="weight of queue 'a' must be an int from 1"):
        fastjobs.Worker({"a": 0, "b": 1})
    with pytest.raises(ValueError, match="weight of queue 'b' must be an int"):
        fastjobs.Worker({"a": 1, "b": 1.5})  # type: ignore[dict-item]
    w = spawn_worker("-q", "a,2", "-q", "b")
    assert w.proc.wait(timeout=30) == 2
    assert "give a weight to every --queue" in w.output()
