"""fastjobs.testing: fake() records dispatches without Redis, inline() runs them in the calling
process; both put the real sending back after their block."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue
from fastjobs.testing import fake, inline


class FakedGreet(fastjobs.Job[dict[str, str], str]):
    queue = "greetings"

    def process(self, payload: dict[str, str]) -> str:
        if payload["name"] == "nobody":
            raise ValueError("nobody to greet")
        return f"hello {payload['name']}"


class FakedAsyncGreet(fastjobs.Job[str, str]):
    queue = "greetings"

    async def process(self, name: str) -> str:
        await asyncio.sleep(0)
        return f"hi {name}"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class FakedPlot(fastjobs.Job[Point, int]):
    queue = "greetings"

    def process(self, p: Point) -> int:
        return p.x * p.y


def signup(name: str) -> fastjobs.JobHandle[str]:
    """Code under test: it dispatches."""
    return FakedGreet.dispatch({"name": name}).delay(30).meta({"from": "signup"}).send()


def test_fake_records_and_sends_nothing(redis: Any, prefix: str) -> None:
    with fake() as jobs:
        handle = signup("ada")
        FakedGreet.dispatch_many([{"name": "bob"}, {"name": "eve"}], queue="other")
        assert handle.status() == "waiting"
        with pytest.raises(RuntimeError, match="was faked, not run"):
            handle.wait_result()
    jobs.assert_dispatched(FakedGreet, count=3)
    jobs.assert_dispatched(FakedGreet, where=lambda d: d.payload == {"name": "ada"} and d.delay == 30 and d.options["meta"] == {"from": "signup"})
    jobs.assert_dispatched(FakedGreet, count=2, where=lambda d: d.queue == "other")
    jobs.assert_not_dispatched(FakedAsyncGreet)
    with pytest.raises(AssertionError, match="FakedAsyncGreet was not dispatched"):
        jobs.assert_dispatched(FakedAsyncGreet)
    with pytest.raises(AssertionError, match="dispatched 3 time"):
        jobs.assert_dispatched(FakedGreet, count=1)
    with pytest.raises(AssertionError, match="jobs were dispatched"):
        jobs.assert_nothing_dispatched()
    assert redis("KEYS", f"{prefix}:*") == []  # nothing reached Redis
    assert jobs.run(FakedGreet) == ["hello ada", "hello bob", "hello eve"]
    assert handle.wait_result() == "hello ada" and handle.status() == "completed"


def test_inline_runs_each_job_at_once_with_its_result_or_error() -> None:
    with inline() as jobs:
        assert FakedGreet.dispatch({"name": "ada"}).wait_result() == "hello ada"
        failed = FakedGreet.dispatch({"name": "nobody"}).send()
        assert failed.status() == "failed"
        with pytest.raises(ValueError, match="nobody to greet"):
            failed.wait_result()
        assert FakedPlot.dispatch(Point(3, 4)).send().wait_result() == 12

        async def from_a_loop() -> str:
            handle = await FakedAsyncGreet.dispatch("bob")
            return str(await handle.wait_result_async())

        assert asyncio.run(from_a_loop()) == "hi bob"
    assert [d.state for d in jobs.dispatched()] == ["completed", "failed", "completed", "completed"]


def test_payloads_are_checked_as_a_real_dispatch_checks_them() -> None:
    with fake() as jobs:
        bad: Any = {"x": 1, "y": "two"}
        with pytest.raises(fastjobs.PayloadValidationError, match=r"payload\.y: expected int, got str"):
            FakedPlot.dispatch(bad).send()
        with pytest.raises(TypeError):
            FakedGreet.dispatch({"name": object()}).send()  # type: ignore[dict-item]
    jobs.assert_nothing_dispatched()


def test_the_real_dispatch_is_back_after_the_block(start_worker: Any) -> None:
    with fake():
        pass
    start_worker(queues=["greetings"])
    h = FakedGreet.dispatch({"name": "real"}).send()
    assert type(h) is fastjobs.JobHandle and h.wait_result(timeout=10) == "hello real"
    assert Queue("greetings").counts()["completed"] == 1
