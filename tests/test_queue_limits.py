"""Queue limits with real worker processes on a real Redis: a rate limit holds across three
workers (measured over 10 s), a concurrency limit holds across workers, clearing limits lets
the queue run at once, and bad limits are typed errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, QueueLimits

from .apps.jobs import Echo, Sleep, Stamp, stamps
from .conftest import eventually


def test_a_rate_limit_holds_across_three_worker_processes(spawn_worker: Any, redis: Any, prefix: str) -> None:
    rate = 40  # jobs per second, for the whole fleet
    q = Queue("stamps")
    Stamp.dispatch_many(list(range(3_000)))  # far more than 10 s of the limit
    q.set_limits(rate=rate, per="1s")
    assert q.limits() == QueueLimits(rate=rate, per=1.0, concurrency=None)
    workers = [spawn_worker("--queue", "stamps", "--concurrency", "4") for _ in range(3)]
    eventually(lambda: len(stamps(redis, prefix)) > 0, timeout=20)
    time.sleep(11.5)
    starts = sorted(ms for _id, _pid, ms in stamps(redis, prefix))
    first = starts[0]
    in_ten = sum(1 for ms in starts if first <= ms < first + 10_000)
    print(f"rate limit {rate}/s: {in_ten} jobs started in 10 s on {len({p for _i, p, _m in stamps(redis, prefix)})} workers")
    assert abs(in_ten - 10 * rate) <= rate, in_ten  # within ±10% of R over 10 s
    assert len({pid for _id, pid, _ms in stamps(redis, prefix)}) >= 2  # shared between workers
    q.set_limits()  # cleared: the rest drains at full speed
    eventually(lambda: q.counts()["completed"] == 3_000, timeout=30)
    for w in workers:
        w.proc.terminate()
        w.output()


def test_a_concurrency_limit_holds_across_workers(spawn_worker: Any) -> None:
    q = Queue("slow")
    Echo.dispatch("known").on_queue("slow").send()
    q.set_limits(concurrency=2)
    q.pause()  # both workers up before the first job runs: a slow start must not leave one idle
    handles = [Sleep.dispatch({"seconds": 0.3}).on_queue("slow").send() for _ in range(12)]
    workers = [spawn_worker("--queue", "slow", "--concurrency", "4") for _ in range(2)]
    for w in workers:
        w.wait_for("worker started", timeout=30)
    q.resume()
    most = 0
    deadline = time.monotonic() + 30
    while q.counts()["completed"] < 13 and time.monotonic() < deadline:
        most = max(most, q.counts()["active"])
        time.sleep(0.02)
    assert q.counts()["completed"] == 13
    assert 1 <= most <= 2, most
    assert len({h.wait_result(timeout=5) for h in handles}) == 2  # both workers took part
    for w in workers:
        w.proc.terminate()
        w.output()


def test_a_worker_waiting_on_a_rate_limit_starts_when_it_is_cleared(start_worker: Any) -> None:
    q = Queue("default")
    Echo.dispatch("known").send()
    q.set_limits(rate=1, per="60s")
    start_worker(queues=["default"])
    eventually(lambda: q.counts()["completed"] == 1)
    held = [Echo.dispatch(i).send() for i in range(5)]
    time.sleep(1.0)
    assert {h.status() for h in held} == {"waiting"}
    q.set_limits()
    assert q.limits() == QueueLimits()
    assert [h.wait_result(timeout=5) for h in held] == list(range(5))


def test_bad_limits_are_typed_errors() -> None:
    Echo.dispatch("x").send()
    q = Queue("default")
    with pytest.raises(ValueError, match="rate must be at least 1, got 0"):
        q.set_limits(rate=0, per="1s")
    with pytest.raises(ValueError, match="concurrency must be at least 1, got -3"):
        q.set_limits(concurrency=-3)
    with pytest.raises(TypeError, match="rate must be an int, got str"):
        q.set_limits(rate="100", per="1s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs both rate"):
        q.set_limits(rate=10)
    with pytest.raises(ValueError, match="per must be"):
        q.set_limits(rate=10, per=0)
    with pytest.raises(fastjobs.UnknownQueueError):
        Queue("nowhere").set_limits(rate=10, per=1)
    assert q.limits() == QueueLimits()  # nothing was set by the refused calls
