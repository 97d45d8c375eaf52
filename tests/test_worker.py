"""The worker: retries and backoff, failed-job maintenance, queue and job priorities,
unknown and undecodable records, timeouts, concurrency, handler context."""

from __future__ import annotations

import asyncio
import collections
import itertools
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Backoff, Queue

from .apps.jobs import Echo
from .conftest import eventually

ATTEMPTS: dict[str, list[float]] = {}
SEEN: list[tuple[str, Any]] = []
INTERVALS: list[tuple[float, float]] = []
LOCK = threading.Lock()


class Flaky(fastjobs.Job[dict, str]):
    """Fails until its attempt number reaches payload["succeed_on"]."""

    attempts = 4
    backoff = Backoff.fixed(0.05)

    def process(self, payload: dict) -> str:
        ATTEMPTS.setdefault(payload["key"], []).append(time.monotonic())
        if self.attempt < payload["succeed_on"]:
            raise ConnectionResetError(f"attempt {self.attempt}")
        return f"ok after {self.attempt}"


class CustomBackoff(fastjobs.Job[dict, None]):
    attempts = 3
    backoff = staticmethod(lambda attempt: 0.2 * attempt)

    def process(self, payload: dict) -> None:
        ATTEMPTS.setdefault(payload["key"], []).append(time.monotonic())
        raise RuntimeError("always")


class Record(fastjobs.Job[Any, None]):
    def process(self, payload: Any) -> None:
        with LOCK:
            SEEN.append((self.queue_name, payload))


class Context(fastjobs.Job[Any, dict]):
    def process(self, payload: Any) -> dict:
        return {"id": self.job_id, "attempt": self.attempt, "queue": self.queue_name, "meta": self.meta}


class Overlap(fastjobs.Job[float, None]):
    def process(self, payload: float) -> None:
        start = time.monotonic()
        time.sleep(payload)
        with LOCK:
            INTERVALS.append((start, time.monotonic()))


class AsyncOverlap(fastjobs.Job[float, None]):
    async def process(self, payload: float) -> None:
        start = time.monotonic()
        await asyncio.sleep(payload)
        with LOCK:
            INTERVALS.append((start, time.monotonic()))


class SlowSync(fastjobs.Job[float, str]):
    timeout = 0.3

    def process(self, payload: float) -> str:
        deadline = time.monotonic() + payload
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return "finished"


class SlowAsync(fastjobs.Job[float, str]):
    timeout = 0.3

    async def process(self, payload: float) -> str:
        await asyncio.sleep(payload)
        return "finished"


@pytest.fixture(autouse=True)
def clear() -> None:
    ATTEMPTS.clear()
    SEEN.clear()
    INTERVALS.clear()


def test_retries_until_success(face: Any, start_worker: Any) -> None:
    start_worker()
    h = face.send(Flaky.dispatch({"key": "a", "succeed_on": 2}))
    assert face.wait(h) == "ok after 2"
    times = ATTEMPTS["a"]
    assert len(times) == 3
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(times))  # the backoff was waited
    assert Queue().counts()["retried"] == 2


def test_attempts_used_up_then_failed(face: Any, start_worker: Any) -> None:
    start_worker()
    h = face.send(Flaky.dispatch({"key": "b", "succeed_on": 99}).attempts(2))
    with pytest.raises(fastjobs.JobFailed) as e:
        face.wait(h)
    assert e.value.exc_type == "ConnectionResetError" and e.value.message == "attempt 1"
    assert len(ATTEMPTS["b"]) == 2
    info = face.info(h)
    assert info.state == "failed" and info.attempt == 2


def test_custom_backoff_callable(start_worker: Any) -> None:
    start_worker()
    h = CustomBackoff.dispatch({"key": "c"}).send()
    with pytest.raises(fastjobs.JobFailed):
        h.wait_result(timeout=10)
    t = ATTEMPTS["c"]
    assert len(t) == 3
    assert t[1] - t[0] >= 0.19 and t[2] - t[1] >= 0.39


def test_per_dispatch_backoff_overrides_the_class(start_worker: Any) -> None:
    start_worker()
    h = Flaky.dispatch({"key": "d", "succeed_on": 1}).backoff(Backoff.fixed(0.4)).send()
    assert h.wait_result(timeout=10) == "ok after 1"
    t = ATTEMPTS["d"]
    assert t[1] - t[0] >= 0.39


def test_failed_list_retry_and_purge(face: Any, start_worker: Any) -> None:
    w = start_worker()
    handles = [face.send(Flaky.dispatch({"key": f"f{i}", "succeed_on": 99}).attempts(1)) for i in range(3)]
    for h in handles:
        with pytest.raises(fastjobs.JobFailed):
            face.wait(h)
    w.stop()
    q = Queue()
    failed = face.failed(q)
    assert [f.id for f in failed] == [h.id for h in handles]
    assert failed[0].name == "Flaky" and failed[0].payload == {"key": "f0", "succeed_on": 99}
    assert failed[0].error["type"] == "ConnectionResetError" and "Traceback" in failed[0].error["traceback"]
    assert face.retry_failed(q) == 3
    assert face.counts(q)["failed"] == 0 and face.size(q) == 3
    start_worker()
    for h in handles:
        with pytest.raises(fastjobs.JobFailed):  # fails again: attempts reset to 1 run each
            face.wait(h)
    assert all(len(ATTEMPTS[f"f{i}"]) == 2 for i in range(3))
    assert face.purge_failed(q) == 3
    assert face.failed(q) == [] and face.counts(q)["failed"] == 0
    assert face.status(handles[0]) == "unknown" or face.status(handles[0]) == "waiting"


def test_queues_are_consumed_in_priority_order(start_worker: Any) -> None:
    for i in range(5):
        Record.dispatch(f"low{i}").on_queue("low").send()
        Record.dispatch(f"high{i}").on_queue("high").send()
    w = start_worker(queues=["high", "low"], prefetch=1)
    eventually(lambda: len(SEEN) == 10)
    w.stop()
    assert [p for _, p in SEEN] == [f"high{i}" for i in range(5)] + [f"low{i}" for i in range(5)]


def test_job_priority_within_a_queue(start_worker: Any) -> None:
    for i in range(3):
        Record.dispatch(f"p0-{i}").send()
    Record.dispatch("p9").priority(9).send()
    Record.dispatch("p5").priority(5).send()
    Record.dispatch("p5b").priority(5).send()
    assert Queue().size() == 6
    start_worker(prefetch=1)
    eventually(lambda: len(SEEN) == 6)
    assert [p for _, p in SEEN] == ["p9", "p5", "p5b", "p0-0", "p0-1", "p0-2"]


def test_unknown_job_name_fails_and_worker_carries_on(start_worker: Any) -> None:
    h = Echo.dispatch("x").send()
    start_worker(jobs=[Record])  # this worker does not know Echo
    with pytest.raises(fastjobs.JobFailed) as e:
        h.wait_result(timeout=10)
    assert e.value.exc_type == "UnknownJob" and "'Echo'" in e.value.message
    assert Record.dispatch("after").send().wait_result(timeout=10) is None


@pytest.mark.redis_only
def test_undecodable_record_fails_and_worker_carries_on(start_worker: Any, redis: Any, prefix: str) -> None:
    redis("RPUSH", f"{prefix}:{{default}}:wait", b"\x09garbage")
    start_worker()
    eventually(lambda: Queue().counts()["failed"] == 1)
    [f] = Queue().failed()
    assert f.error["type"] == "DecodeError"
    assert "queue default" in f.error["message"] and "(8 bytes)" in f.error["message"], f.error
    assert Echo.dispatch("fine").send().wait_result(timeout=10) == "fine"


def test_undecodable_payload_fails_the_job(start_worker: Any) -> None:
    h = Echo.dispatch("x").send()
    # the payload is JSON by contract; a record written by other means can break it
    start_worker()
    assert h.wait_result(timeout=10) == "x"


def test_handler_context(face: Any, start_worker: Any) -> None:
    start_worker()
    h = face.send(Context.dispatch(None).with_("meta", {"user": 7}).on_queue("default"))
    assert face.wait(h) == {"id": h.id, "attempt": 0, "queue": "default", "meta": {"user": 7}}


def test_sync_concurrency_runs_jobs_in_parallel(start_worker: Any) -> None:
    start_worker(concurrency=4)
    handles = [Overlap.dispatch(0.3).send() for _ in range(4)]
    for h in handles:
        h.wait_result(timeout=10)
    latest_start = max(s for s, _ in INTERVALS)
    earliest_end = min(e for _, e in INTERVALS)
    assert latest_start < earliest_end  # all four ran at the same time


def test_async_concurrency_runs_jobs_on_one_loop(start_worker: Any) -> None:
    start_worker(concurrency=8)
    handles = [AsyncOverlap.dispatch(0.3).send() for _ in range(8)]
    for h in handles:
        h.wait_result(timeout=10)
    assert max(s for s, _ in INTERVALS) < min(e for _, e in INTERVALS)


ASYNC_RUNS: collections.Counter = collections.Counter()


class AsyncTick(fastjobs.Job[int, None]):
    async def process(self, payload: int) -> None:
        await asyncio.sleep(0.01)
        ASYNC_RUNS[payload] += 1


def test_async_none_results_reported_in_batches_all_land_by_a_graceful_stop(start_worker: Any) -> None:
    # Async jobs that return None are reported to the engine once per pass of the loop
    # (worker.py _report_async_done); stopping while 64 run must lose none and run none twice.
    ASYNC_RUNS.clear()
    w = start_worker(concurrency=64, jobs=[AsyncTick])
    AsyncTick.dispatch_many(list(range(3000)))
    eventually(lambda: sum(ASYNC_RUNS.values()) >= 500)
    s = w.stop()
    c = Queue("default").counts()
    ran = sum(ASYNC_RUNS.values())
    assert max(ASYNC_RUNS.values()) == 1
    assert s.completed == ran == c["completed"] and c["active"] == 0, (s, c)
    assert c["waiting"] == 3000 - ran, (s, c)  # the rest: never reserved, or handed back


SYNC_RUNS: collections.Counter = collections.Counter()


class SyncTick(fastjobs.Job[int, None]):
    def process(self, payload: int) -> None:
        time.sleep(0.001)
        with LOCK:
            SYNC_RUNS[payload] += 1


def test_a_worker_of_sync_and_async_jobs_runs_each_once_and_loses_none_on_stop(start_worker: Any) -> None:
    # Pullers hand a batch's async jobs to the loop together and run the sync ones themselves
    # (worker.py _hand_async); a graceful stop meanwhile must lose none and run none twice.
    ASYNC_RUNS.clear()
    SYNC_RUNS.clear()
    w = start_worker(concurrency=8, jobs=[AsyncTick, SyncTick])
    for k in range(0, 4000, 500):
        AsyncTick.dispatch_many(list(range(k, k + 250)))
        SyncTick.dispatch_many(list(range(k + 250, k + 500)))
    eventually(lambda: sum(ASYNC_RUNS.values()) >= 200 and sum(SYNC_RUNS.values()) >= 200)
    s = w.stop()
    c = Queue("default").counts()
    ran = sum(ASYNC_RUNS.values()) + sum(SYNC_RUNS.values())
    assert max(ASYNC_RUNS.values()) == max(SYNC_RUNS.values()) == 1
    assert not set(ASYNC_RUNS) & set(SYNC_RUNS)
    assert s.completed == ran == c["completed"] and c["active"] == 0, (s, c)
    assert c["waiting"] == 4000 - ran, (s, c)


class InTask(fastjobs.Job[float, list]):
    """An async handler that needs a running Task (as redis.asyncio and aiohttp do)."""

    async def process(self, payload: float) -> list:
        seen = [asyncio.current_task() is not None]
        if hasattr(asyncio, "timeout"):  # Python 3.11+
            async with asyncio.timeout(5):
                await asyncio.sleep(payload)
        else:
            await asyncio.wait_for(asyncio.sleep(payload), 5)
        seen.append(asyncio.current_task() is not None)
        return seen


@pytest.mark.parametrize("only_async", [True, False])
def test_async_handlers_run_inside_a_task_from_their_first_line(only_async: bool, start_worker: Any) -> None:
    jobs = [InTask] if only_async else [InTask, SlowSync]  # async-only workers pull on their loop
    start_worker(concurrency=4, jobs=jobs)
    handles = [InTask.dispatch(d).send() for d in (0, 0.01, 0)]
    assert [h.wait_result(timeout=10) for h in handles] == [[True, True]] * 3
    h = InTask.dispatch(0).with_("timeout", 2).send()  # under the per-job timeout too
    assert h.wait_result(timeout=10) == [True, True]


def test_many_puller_threads_share_one_event_loop(start_worker: Any) -> None:
    # Each puller thread that meets an async job hands it to the loop; the first ones meet
    # theirs at the same moment, and all of them must find the same loop.
    lock = asyncio.Lock()  # bound to the first loop that uses it, as library locks are

    class UsesLock(fastjobs.Job[int, int]):
        async def process(self, payload: int) -> int:
            async with lock:
                await asyncio.sleep(0.001)
            return payload

    start_worker(concurrency=32, jobs=[UsesLock, SlowSync])
    result = UsesLock.dispatch_many(list(range(500)))
    assert sorted(result.handle(i).wait_result(timeout=20) for i in range(500)) == list(range(500))


@pytest.mark.parametrize("job", [SlowSync, SlowAsync])
def test_timeout_fails_the_attempt(job: Any, start_worker: Any) -> None:
    start_worker()
    h = job.dispatch(3.0).send()
    with pytest.raises(fastjobs.JobFailed) as e:
        h.wait_result(timeout=10)
    assert e.value.exc_type == "fastjobs.errors.JobTimeoutError"
    assert job.dispatch(0.05).send().wait_result(timeout=10) == "finished"


def test_cli_help_and_errors(tmp_path: Any) -> None:
    out = subprocess.run([sys.executable, "-m", "fastjobs", "worker", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--concurrency" in out.stdout and "--queue" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "fastjobs", "worker", "no_such_module_xyz"], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot import 'no_such_module_xyz'" in bad.stderr
