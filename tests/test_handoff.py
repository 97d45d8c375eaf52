"""Hand-over to idle workers (common.lua wake(), reserve.lua, leave.lua), with real workers:
an idle worker is handed each job straight onto its inbox; a worker killed while idle loses
nothing; a stopping worker hands back what was handed to it; small sends go out on the
caller's thread and survive a flushed script cache."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from fastjobs import Queue

from .apps.jobs import Echo, Noop, Sleep, Stamp, stamps
from .conftest import eventually
from .resp import Redis
from .test_delivery import JOBS, record_attempt, record_id, summary

# Hand-over to an idle worker is the Redis store's.
pytestmark = pytest.mark.redis_only


def idle_slots(redis: Redis, prefix: str, queue: str) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else s for s in redis("ZRANGE", f"{prefix}:{{{queue}}}:idle", 0, -1)]


def test_an_idle_worker_is_handed_each_job(start_worker: Any, redis: Redis, prefix: str) -> None:
    w = start_worker(queues=["default"], concurrency=1)
    eventually(lambda: len(idle_slots(redis, prefix, "default")) == 1)
    for i in range(50):
        assert Echo.dispatch(i).send().wait_result(timeout=10) == i
    stats = w.worker.engine.stats()
    # Each job finds the worker registered again (it re-registers as it takes a job). A few
    # may not: one dispatched while the worker renews its slot (the renewing reserve takes
    # it), or the next one when the result beat the re-registration (more of them on a
    # loaded machine: 43 of 50 were handed on one). Without hand-offs none would be.
    assert stats["handed"] > 25 and stats["reserved"] == 50, stats
    w.stop()
    assert idle_slots(redis, prefix, "default") == []  # a graceful stop ends the slot


def test_a_job_handed_straight_to_an_idle_worker_does_not_pass_ready_ones(start_worker: Any, redis: Redis, prefix: str) -> None:
    # A dispatch meeting an idle worker is handed to it without queueing (push.lua), but only
    # when nothing is ready: ready jobs are normally handed at once, so put two in the list by
    # hand (records taken from a queue no worker reads) while the worker stays idle.
    early = [Stamp.dispatch(f"early {i}").on_queue("parked").send().id for i in range(2)]
    parked = redis("LRANGE", f"{prefix}:{{parked}}:wait", 0, -1)
    start_worker(queues=["stamps"], concurrency=1)
    eventually(lambda: len(idle_slots(redis, prefix, "stamps")) == 1)
    redis("RPUSH", f"{prefix}:{{stamps}}:wait", *parked)
    late = Stamp.dispatch("late").send().id
    eventually(lambda: len(stamps(redis, prefix)) == 3)
    assert [s[0] for s in stamps(redis, prefix)] == [*early, late]


def test_a_worker_killed_while_idle_loses_no_job(spawn_worker: Any, redis: Redis, prefix: str) -> None:
    victim = spawn_worker("--queue", "default", "--lease", "1")
    eventually(lambda: len(idle_slots(redis, prefix, "default")) == 1, timeout=30)
    [dead] = idle_slots(redis, prefix, "default")
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    # Handed to the dead worker's slot (still valid for a few seconds): it waits for its
    # lease to expire, is reaped, and runs on the next worker.
    handle = Echo.dispatch("late").send()
    spawn_worker("--queue", "default", "--lease", "1")
    assert handle.wait_result(timeout=30) == "late"
    # Reaping one of its leases ended the dead worker's slot and deleted its inbox (which
    # held the hand-off: the job was handed to that slot).
    assert dead not in idle_slots(redis, prefix, "default")
    worker = dead.split("|")[0]
    assert redis("EXISTS", f"{prefix}:{{default}}:inbox:{worker}") == 0


def test_a_stopping_worker_hands_back_what_was_handed_to_it(spawn_worker: Any, redis: Redis, prefix: str) -> None:
    w = spawn_worker("--queue", "default", "--concurrency", "1", "--grace", "10", modules=JOBS)
    slow = Sleep.dispatch({"seconds": 2.0}).send()
    eventually(lambda: Queue("default").counts()["active"] == 1, timeout=30)
    # Busy, yet registered as idle (it re-registers as it takes a job: a job that comes is
    # prefetched onto its inbox while the handler runs).
    eventually(lambda: len(idle_slots(redis, prefix, "default")) == 1)
    handed = Echo.dispatch("x").send()
    eventually(lambda: Queue("default").counts()["active"] == 2)
    w.proc.send_signal(signal.SIGTERM)
    eventually(lambda: Queue("default").counts()["waiting"] == 1, timeout=5)
    out = w.output()
    assert summary(out) == (1, 0, 0, 1, 0), out
    assert slow.status() == "completed" and handed.status() == "waiting"
    assert idle_slots(redis, prefix, "default") == []
    # Back at the head of the queue with no attempt counted.
    [rec] = redis("LRANGE", f"{prefix}:{{default}}:wait", 0, -1)
    assert (record_id(rec), record_attempt(rec)) == (handed.id, 0)


def test_each_queue_of_a_worker_hands_over(start_worker: Any, redis: Redis, prefix: str) -> None:
    w = start_worker(queues=["hi", "lo"], concurrency=2)
    eventually(lambda: idle_slots(redis, prefix, "hi") and idle_slots(redis, prefix, "lo"))
    assert Echo.dispatch("b").on_queue("lo").send().wait_result(timeout=10) == "b"
    assert Echo.dispatch("a").on_queue("hi").send().wait_result(timeout=10) == "a"
    assert w.worker.engine.stats()["handed"] == 2


def test_small_sends_survive_a_flushed_script_cache(redis: Redis) -> None:
    Noop.dispatch(1).send()
    redis("SCRIPT", "FLUSH")
    Noop.dispatch(2).send()  # NOSCRIPT on the caller's connection: loaded and sent again
    Noop.dispatch(3).delay(60).send()
    assert Queue("default").size() == 2
    assert Queue("default").counts()["delayed"] == 1


def test_sends_from_many_threads_at_once_all_land() -> None:
    # One thread at a time sends on the caller's connection; the others take the shared
    # multiplexed one instead of waiting.
    def send(n: int) -> None:
        for i in range(n):
            Noop.dispatch(i).send()

    threads = [threading.Thread(target=send, args=(200,)) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - started < 60
    assert Queue("default").size() == 1600
