"""Results and failures: wait_result in both faces, many waiters, failures, timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from .apps.jobs import Echo, Sleep


class Explode(fastjobs.Job[dict, None]):
    def process(self, payload: dict) -> None:
        raise ValueError(f"bad input {payload['n']}")


class AsyncDouble(fastjobs.Job[int, int]):
    async def process(self, payload: int) -> int:
        await asyncio.sleep(0.01)
        return payload * 2


def test_result_round_trip(face: Any, start_worker: Any) -> None:
    start_worker()
    h = face.send(Echo.dispatch({"a": [1, 2.5, "x", None, True]}))
    assert face.wait(h) == {"a": [1, 2.5, "x", None, True]}
    assert face.status(h) == "completed"
    assert face.info(h).result == {"a": [1, 2.5, "x", None, True]}


def test_async_handler_result(face: Any, start_worker: Any) -> None:
    start_worker(concurrency=4)
    handles = [face.send(AsyncDouble.dispatch(i)) for i in range(20)]
    assert [face.wait(h) for h in handles] == [i * 2 for i in range(20)]


def test_none_result_and_finished_job_returns_at_once(face: Any, start_worker: Any) -> None:
    w = start_worker()
    h = face.send(Echo.dispatch(None))
    assert face.wait(h) is None
    w.stop()
    # Finished, nobody waiting, no worker running: the answer comes straight from Redis.
    started = time.monotonic()
    assert face.wait(h, timeout=5) is None
    assert face.status(h) == "completed"
    assert time.monotonic() - started < 1


def test_failure_raises_job_failed_with_details(face: Any, start_worker: Any) -> None:
    start_worker()
    h = face.send(Explode.dispatch({"n": 7}))
    with pytest.raises(fastjobs.JobFailed) as e:
        face.wait(h)
    assert e.value.exc_type == "ValueError"
    assert e.value.message == "bad input 7"
    assert "Traceback" in e.value.traceback and "bad input 7" in e.value.traceback
    assert e.value.job_id == h.id
    assert face.status(h) == "failed"
    assert face.info(h).error["type"] == "ValueError"


def test_timeout(face: Any) -> None:
    h = face.send(Echo.dispatch(1))  # no worker
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.3"):
        face.wait(h, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3


def test_unknown_job(face: Any) -> None:
    with pytest.raises(fastjobs.UnknownJobError):
        face.wait(fastjobs.JobHandle("no-such-job", "default"), timeout=1)


def test_bad_timeout_value() -> None:
    with pytest.raises(ValueError, match="timeout"):
        fastjobs.JobHandle("x", "default").wait_result(timeout=-1)


def test_many_waiters_on_one_job_all_get_the_result(start_worker: Any) -> None:
    h = Sleep.dispatch({"seconds": 0.5}).send()
    results: list[Any] = []

    def wait() -> None:
        results.append(h.wait_result(timeout=10))

    threads = [threading.Thread(target=wait) for _ in range(10)]
    for t in threads:
        t.start()

    async def many() -> list[Any]:
        return await asyncio.gather(*(h.wait_result_async(timeout=10) for _ in range(50)))

    box: list[Any] = []
    at = threading.Thread(target=lambda: box.extend(asyncio.run(many())))
    at.start()
    time.sleep(0.2)  # let every waiter register before the job can finish
    start_worker()
    for t in threads:
        t.join(15)
    at.join(15)
    assert len(results) == 10 and len(set(results)) == 1
    assert len(box) == 50 and set(box) == set(results)


def test_wait_result_on_the_builder(start_worker: Any) -> None:
    start_worker()
    assert Echo.dispatch("x").wait_result(timeout=10) == "x"

    async def go() -> Any:
        return await Echo.dispatch("y").wait_result_async(timeout=10)

    assert asyncio.run(go()) == "y"


@pytest.mark.redis_only
def test_result_ttl_expires(start_worker: Any, redis: Any, prefix: str) -> None:
    fastjobs.configure(result_ttl=0.5)
    start_worker()
    h = Echo.dispatch("short-lived").send()
    assert h.wait_result(timeout=10) == "short-lived"
    key = f"{prefix}:{{default}}:result:{h.id}"
    assert 0 < redis("PTTL", key) <= 500
    time.sleep(0.7)
    assert redis("EXISTS", key) == 0
    assert h.status() == "completed"  # the completion mark outlives the result


def test_counts_track_outcomes(start_worker: Any) -> None:
    start_worker()
    ok = [Echo.dispatch(i).send() for i in range(5)]
    bad = Explode.dispatch({"n": 1}).send()
    for h in ok:
        h.wait_result(timeout=10)
    with pytest.raises(fastjobs.JobFailed):
        bad.wait_result(timeout=10)
    c = Queue().counts()
    assert (c["completed"], c["failed"], c["waiting"], c["active"]) == (5, 1, 0, 0)
