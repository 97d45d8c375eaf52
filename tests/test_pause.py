"""Pausing and resuming a queue, with real worker processes: workers stop taking its jobs at
once (their prefetched jobs go back, running ones finish), dispatch goes on, counts show it,
resume drains at once; the other queues of the same workers carry on; a misspelt queue is an
error."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from .apps.jobs import Echo, Sleep
from .conftest import eventually


def test_pause_holds_jobs_while_two_workers_idle_and_resume_drains_them(spawn_worker: Any) -> None:
    q = Queue("pausable")
    workers = [spawn_worker("--queue", "pausable", "--queue", "other", "--concurrency", "2") for _ in range(2)]
    first = Echo.dispatch("first").on_queue("pausable").send()
    assert first.wait_result(timeout=15) == "first"  # both workers up, the queue known
    assert q.pause() is True
    assert q.pause() is False  # paused already
    assert q.counts()["paused"] is True and q.is_paused()
    held = [Echo.dispatch(i).on_queue("pausable").send() for i in range(200)]  # dispatch goes on
    bulk = Echo.dispatch_many(list(range(1_000)), queue="pausable")
    # The same workers go on with their other queue.
    assert Echo.dispatch("meanwhile").on_queue("other").send().wait_result(timeout=10) == "meanwhile"
    time.sleep(1.5)  # longer than a worker's idle round: nothing of the paused queue ran
    c = q.counts()
    assert (c["waiting"], c["active"], c["completed"]) == (1_200, 0, 1), c
    assert {h.status() for h in held} == {"waiting"}
    assert q.resume() is True and q.resume() is False
    assert [h.wait_result(timeout=15) for h in held] == list(range(200))
    assert bulk.handle(999).wait_result(timeout=15) == 999
    eventually(lambda: q.counts()["completed"] == 1_201)
    assert q.counts()["paused"] is False
    for w in workers:
        w.proc.terminate()
        assert "0 stale" in w.output()


def test_pause_hands_back_prefetched_jobs_and_lets_running_ones_finish(spawn_worker: Any) -> None:
    q = Queue("busy")
    w = spawn_worker("--queue", "busy", "--concurrency", "1", "--prefetch", "50")
    slow = Sleep.dispatch({"seconds": 1.5}).on_queue("busy").send()
    eventually(lambda: slow.status() == "active", timeout=15)
    rest = [Echo.dispatch(i).on_queue("busy").send() for i in range(20)]
    eventually(lambda: q.counts()["active"] == 21, timeout=10)  # prefetched behind the slow one
    q.pause()
    # The prefetched jobs come back at once, in order; the running one finishes.
    eventually(lambda: q.counts()["waiting"] == 20, timeout=5)
    assert slow.wait_result(timeout=10) == w.proc.pid
    time.sleep(0.5)
    assert {h.status() for h in rest} == {"waiting"}
    q.resume()
    assert [h.wait_result(timeout=10) for h in rest] == list(range(20))
    w.proc.terminate()
    w.output()


def test_an_idle_worker_is_handed_nothing_while_paused(start_worker: Any) -> None:
    start_worker(queues=["quiet"])
    assert Echo.dispatch("hello").on_queue("quiet").send().wait_result(timeout=10) == "hello"
    Queue("quiet").pause()
    h = Echo.dispatch("held").on_queue("quiet").send()
    time.sleep(1.2)
    assert h.status() == "waiting"
    Queue("quiet").resume()
    assert h.wait_result(timeout=10) == "held"


def test_pause_async_twins(start_worker: Any) -> None:
    Echo.dispatch_many([1], queue="twins")

    async def go() -> tuple[bool, bool, bool, list[str]]:
        q = Queue("twins")
        paused = await q.pause_async()
        seen = await q.is_paused_async()
        resumed = await q.resume_async()
        names = [x.name for x in await Queue.all_async()]
        return paused, seen, resumed, names

    paused, seen, resumed, names = asyncio.run(go())
    assert (paused, seen, resumed) == (True, True, True) and "twins" in names


def test_a_queue_nothing_used_cannot_be_paused_and_the_error_lists_the_queues() -> None:
    Echo.dispatch("x").on_queue("emails").send()
    with pytest.raises(fastjobs.UnknownQueueError, match=r"queue 'emials'.*queues: emails"):
        Queue("emials").pause()
    with pytest.raises(fastjobs.UnknownQueueError):
        Queue("emials").resume()
    with pytest.raises(ValueError, match="invalid queue name"):
        Queue("no spaces").pause()
    assert [q.name for q in Queue.all()] == ["emails"]


def test_a_worker_registers_its_queues_so_they_can_be_paused_before_any_dispatch(start_worker: Any) -> None:
    w = start_worker(queues=["fresh"])
    eventually(lambda: "fresh" in [q.name for q in Queue.all()])
    assert Queue("fresh").pause() is True
    h = Echo.dispatch("later").on_queue("fresh").send()
    time.sleep(1.2)
    assert h.status() == "waiting"
    Queue("fresh").resume()
    assert h.wait_result(timeout=10) == "later"
    w.stop()
