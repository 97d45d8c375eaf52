"""The in-process store (memory://): the whole of fastjobs in one process, beside Redis on a
named connection, and the testing helpers built on it (fastjobs.testing.memory and drain)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import fastjobs
from fastjobs import JobChain, JobFlow, Queue
from fastjobs.testing import drain, memory

from .apps.jobs import Echo, Gather, Leaf


class MemDouble(fastjobs.Job[int, int]):
    queue = "mem-math"

    def process(self, n: int, /) -> int:
        return 2 * n


class MemFlaky(fastjobs.Job[int, int]):
    queue = "mem-math"
    attempts = 3
    backoff = 0.01
    seen: dict[int, int] = {}  # noqa: RUF012 - shared on purpose: attempts per payload
    lock = threading.Lock()

    def process(self, n: int, /) -> int:
        with self.lock:
            self.seen[n] = self.seen.get(n, 0) + 1
            if self.seen[n] < 3:
                raise RuntimeError(f"not yet ({self.seen[n]})")
        return n


def test_a_batch_runs_end_to_end_in_process() -> None:
    with memory():
        handles = MemDouble.dispatch_many(list(range(2_000)))
        single = MemDouble.dispatch(21).send()
        later = MemDouble.dispatch(5).delay(3600).send()
        summary = drain("mem-math", delayed=False)
        assert summary.completed == 2_001
        assert single.wait_result(timeout=5) == 42
        assert handles.handle(1_999).wait_result(timeout=5) == 3_998
        assert later.status() == "delayed"  # due in an hour: left
        counts = Queue("mem-math").counts()
        assert (counts["failed"], counts["waiting"], counts["delayed"]) == (0, 0, 1)
        with pytest.raises(TimeoutError, match="still had jobs"):
            drain("mem-math", timeout=0.3)


def test_retries_chains_and_flows_run_on_it() -> None:
    with memory():
        flaky = MemFlaky.dispatch(7).send()
        chain = JobChain([Echo.dispatch("a"), Echo.dispatch("b")]).dispatch()
        flow = JobFlow(Gather.dispatch(None))
        for i in (1, 2, 3):
            flow.add_child_job(Leaf.dispatch(i))
        tree = flow.dispatch()
        drain("mem-math", "default", "flows", timeout=30)
        assert flaky.wait_result(timeout=5) == 7 and MemFlaky.seen[7] == 3
        assert chain.wait_result(timeout=5) == "b"
        assert tree.wait_result(timeout=5)["sum"] == 6


def test_queue_controls_work_on_it() -> None:
    with memory():
        q = Queue("mem-math")
        h = MemDouble.dispatch(1).send()
        q.pause()
        assert q.counts()["paused"] is True and h.status() == "waiting"
        assert q.cancel(h.id) == "waiting"
        with pytest.raises(fastjobs.JobCancelled):
            h.wait_result(timeout=1)
        q.resume()
        assert MemDouble.dispatch(2).send().status() == "waiting"
        assert q.empty() == 1


def test_a_named_memory_connection_beside_redis(start_worker: Any) -> None:
    # The default connection is the session's Redis; "local" is in process.
    fastjobs.configure("memory://beside", connection="local")
    on_redis = MemDouble.dispatch(3).send()
    local = MemDouble.dispatch(4).on_connection("local").send()
    assert Queue("mem-math").counts()["waiting"] == 1
    assert Queue("mem-math", connection="local").counts()["waiting"] == 1
    start_worker(queues=["mem-math"])
    assert on_redis.wait_result(timeout=10) == 6
    assert local.status() == "waiting"  # the Redis worker never sees the in-process store
    drain("mem-math", connection="local")
    assert local.wait_result(timeout=5) == 8


def test_memory_stores_are_shared_by_name_and_kept_apart_by_prefix() -> None:
    fastjobs.configure("memory://shared", connection="one", prefix="p1")
    fastjobs.configure("memory://shared", connection="two", prefix="p1")
    fastjobs.configure("memory://shared", connection="three", prefix="p2")
    h = MemDouble.dispatch(1).on_connection("one").send()
    assert Queue("mem-math", connection="two").counts()["waiting"] == 1
    assert Queue("mem-math", connection="three").counts()["waiting"] == 0
    drain("mem-math", connection="two")
    assert h.wait_result(timeout=5) == 2


def test_a_bad_memory_url_is_refused() -> None:
    with pytest.raises(ValueError, match="memory store name"):
        fastjobs.configure("memory://no spaces", connection="bad")
