"""Cancelling, removing and retrying single jobs, and emptying or obliterating a queue, with
real workers on a real Redis: waiting jobs (single and inside bulk runs), delayed, running
(sync handlers cooperatively, async ones by CancelledError), finished; flow children follow
their failure policy; bad requests are typed errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import JobFlow, Queue

from .apps.jobs import AsyncPatient, Echo, Gather, Leaf, Patient, Sleep, stamps
from .conftest import eventually


def test_cancel_a_waiting_job_takes_it_out_and_wait_result_raises_job_cancelled() -> None:
    h = Echo.dispatch("never").on_queue("idle").send()
    other = Echo.dispatch("kept").on_queue("idle").send()
    assert h.cancel() == "waiting"
    assert h.status() == "cancelled"
    with pytest.raises(fastjobs.JobCancelled, match=f"job {h.id} on queue 'idle' was cancelled") as e:
        h.wait_result(timeout=5)
    assert e.value.job_id == h.id
    c = Queue("idle").counts()
    assert (c["waiting"], c["cancelled"]) == (1, 1)
    with pytest.raises(fastjobs.JobStateError, match="cancelled already") as err:
        h.cancel()
    assert err.value.state == "cancelled"
    assert other.status() == "waiting"


def test_a_waiter_blocked_on_a_job_hears_of_its_cancel_at_once() -> None:
    h = Echo.dispatch("x").on_queue("idle").send()

    async def go() -> None:
        waiting = asyncio.ensure_future(h.wait_result_async(timeout=10))
        await asyncio.sleep(0.2)
        assert await h.cancel_async() == "waiting"
        with pytest.raises(fastjobs.JobCancelled):
            await waiting

    started = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - started < 5


def test_cancel_inside_bulk_runs_and_at_every_priority_keeps_the_rest_in_order(start_worker: Any, redis: Any, prefix: str) -> None:
    res = Echo.dispatch_many(list(range(1_000)), queue="bulk")
    high = [Echo.dispatch(f"p{i}").on_queue("bulk").priority(5).send() for i in range(3)]
    gone = [res.handle(0), res.handle(17), res.handle(500), res.handle(999), high[1]]
    for h in gone:
        assert h.cancel() == "waiting"
    q = Queue("bulk")
    assert q.counts()["waiting"] == 1_003 - 5
    start_worker(queues=["bulk"], concurrency=2)
    kept = [res.handle(i) for i in range(1_000) if i not in (0, 17, 500, 999)]
    assert [h.wait_result(timeout=20) for h in kept] == [i for i in range(1_000) if i not in (0, 17, 500, 999)]
    assert high[0].wait_result(timeout=5) == "p0" and high[2].wait_result(timeout=5) == "p2"
    assert {h.status() for h in gone} == {"cancelled"}
    eventually(lambda: q.counts()["completed"] == 998)
    c = q.counts()
    assert (c["waiting"], c["cancelled"]) == (0, 5)


def test_cancel_a_delayed_job_and_one_with_a_caller_chosen_id() -> None:
    d = Echo.dispatch("later").on_queue("idle").delay(60).send()
    assert d.status() == "delayed"
    assert d.cancel() == "delayed"
    assert d.status() == "cancelled"
    assert Queue("idle").counts()["delayed"] == 0
    mine = Echo.dispatch("mine").on_queue("idle").job_id("order-42").send()
    assert mine.cancel() == "waiting" and mine.status() == "cancelled"
    again = Echo.dispatch("again").on_queue("idle").job_id("order-42").send()
    assert again.created is False  # a cancelled id stays taken...
    assert Queue("idle").remove("order-42") == "cancelled"  # ...until removed
    assert Echo.dispatch("again").on_queue("idle").job_id("order-42").send().created is True


def test_a_running_sync_job_sees_its_cancel_and_ends_cancelled(start_worker: Any, redis: Any, prefix: str) -> None:
    w = start_worker(queues=["default"], concurrency=2)
    h = Patient.dispatch({"seconds": 30}).send()
    eventually(lambda: h.status() == "active" and stamps(redis, prefix))
    started = time.monotonic()
    assert h.cancel() == "active"
    with pytest.raises(fastjobs.JobCancelled):
        h.wait_result(timeout=10)
    assert time.monotonic() - started < 5  # heard at once, not at the next heartbeat
    assert h.status() == "cancelled"
    eventually(lambda: Queue("default").counts()["cancelled"] == 1)
    assert w.stop().cancelled == 1


def test_a_running_job_that_ignores_its_cancel_completes(start_worker: Any, redis: Any, prefix: str) -> None:
    start_worker(queues=["default"])
    h = Patient.dispatch({"seconds": 1.0, "ignore": True}).send()
    eventually(lambda: stamps(redis, prefix))
    assert h.cancel() == "active"
    assert h.wait_result(timeout=10) == "finished though cancelled"
    assert h.status() == "completed"


def test_a_running_async_job_gets_cancelled_error(spawn_worker: Any, redis: Any, prefix: str) -> None:
    w = spawn_worker("--queue", "default", "--concurrency", "4")
    h = AsyncPatient.dispatch({"seconds": 30}).send()
    eventually(lambda: stamps(redis, prefix), timeout=15)
    assert h.cancel() == "active"
    with pytest.raises(fastjobs.JobCancelled):
        h.wait_result(timeout=10)
    assert [s for s in redis("LRANGE", f"{prefix}:test:stamps", 0, -1) if s.endswith(b"cancelled-error")]
    w.proc.terminate()
    assert "1 cancelled" in w.output()


def test_a_cancel_asked_while_the_job_was_prefetched_ends_it_unstarted(start_worker: Any, redis: Any, prefix: str) -> None:
    start_worker(queues=["slow"], concurrency=1, prefetch=20)
    # Long enough for the busy worker to prefetch `behind` even on a loaded machine.
    first = Sleep.dispatch({"seconds": 3.0}).on_queue("slow").send()
    behind = Echo.dispatch("behind").on_queue("slow").send()
    eventually(lambda: behind.status() == "active")  # leased into this worker's buffer
    assert behind.cancel() == "active"
    with pytest.raises(fastjobs.JobCancelled):
        behind.wait_result(timeout=10)
    assert isinstance(first.wait_result(timeout=10), int)


def test_a_cancelled_flow_child_follows_its_failure_policy(start_worker: Any) -> None:
    flow = JobFlow(Gather.dispatch(None))
    flow.add_child_job(Leaf.dispatch(1))
    flow.add_child_job(Leaf.dispatch(2), on_failure="ignore")
    handle = flow.dispatch()
    children = handle.tree().children
    ignored = next(c for c in children if c.job_id.endswith(":2"))
    assert Queue("flows").cancel(ignored.job_id) == "waiting"
    start_worker(queues=["flows"])
    result = handle.wait_result(timeout=15)
    assert result["count"] == 2 and result["sum"] == 1
    assert result["errors"] == [f"job {ignored.job_id} was cancelled"]

    failing = JobFlow(Gather.dispatch(None))
    failing.add_child_job(Leaf.dispatch(5).delay(30))  # fail_parent, the default
    h2 = failing.dispatch()
    [child] = h2.tree().children
    assert Queue("flows").cancel(child.job_id) == "delayed"
    with pytest.raises(fastjobs.JobFailed, match="cancelled"):
        h2.wait_result(timeout=15)


def test_remove_deletes_a_job_that_is_not_running_and_refuses_a_running_one(start_worker: Any, redis: Any, prefix: str) -> None:
    q = Queue("default")
    waiting = Echo.dispatch("w").send()
    assert q.remove(waiting.id) == "waiting"
    assert q.counts()["waiting"] == 0
    with pytest.raises(fastjobs.JobCancelled):
        waiting.wait_result(timeout=1)  # a generated id stays known: as cancelled
    mine = Echo.dispatch("m").job_id("mine-1").send()
    assert q.remove("mine-1") == "waiting"
    assert mine.status() == "unknown"
    with pytest.raises(fastjobs.UnknownJobError):
        q.remove("mine-1")
    w = start_worker(queues=["default"])
    done = Echo.dispatch("d").job_id("done-1").send()
    assert done.wait_result(timeout=10) == "d"
    assert q.remove("done-1") == "completed"
    assert done.status() == "unknown"
    running = Patient.dispatch({"seconds": 30}).send()
    # Started, not only leased: a leased job not yet started is dropped, not cancelled by its handler.
    eventually(lambda: running.status() == "active" and stamps(redis, prefix))
    with pytest.raises(fastjobs.JobStateError, match="is running") as e:
        q.remove(running.id)
    assert e.value.state == "active"
    running.cancel()
    with pytest.raises(fastjobs.JobCancelled):
        running.wait_result(timeout=10)
    assert w.stop().cancelled == 1


def test_retry_and_remove_one_failed_job(start_worker: Any) -> None:
    q = Queue("flows")
    bad = [Leaf.dispatch(-i).attempts(1).send() for i in range(1, 4)]
    start_worker(queues=["flows"])
    for h in bad:
        with pytest.raises(fastjobs.JobFailed):
            h.wait_result(timeout=10)
    assert q.counts()["failed"] == 3
    with pytest.raises(fastjobs.JobStateError, match="failed already"):
        bad[0].cancel()
    q.pause()
    q.retry(bad[0].id)  # back in the queue, attempts reset
    assert (bad[0].status(), q.counts()["failed"], q.counts()["waiting"]) == ("waiting", 2, 1)
    q.resume()
    with pytest.raises(fastjobs.JobFailed):
        bad[0].wait_result(timeout=10)  # it ran, and failed again
    eventually(lambda: q.counts()["failed"] == 3)
    assert q.remove(bad[1].id) == "failed"
    assert q.counts()["failed"] == 2 and bad[1].status() == "cancelled"  # a generated id: known as cancelled
    with pytest.raises(fastjobs.JobStateError, match="not failed"):
        q.retry(Echo.dispatch("fine").on_queue("flows").send().id)
    with pytest.raises(fastjobs.UnknownJobError):
        q.retry("no-such-job")


def test_empty_cancels_waiting_and_delayed_jobs_page_by_page_and_leaves_running_ones(start_worker: Any, redis: Any, prefix: str) -> None:
    q = Queue("default")
    running = Patient.dispatch({"seconds": 2.0, "ignore": True}).send()
    w = start_worker(queues=["default"], concurrency=1, prefetch=1)
    # Started, not only leased: a pause hands back a leased job that has not started.
    eventually(lambda: running.status() == "active" and stamps(redis, prefix))
    q.pause()  # nothing else starts while the queue fills
    res = Echo.dispatch_many(list(range(12_345)))
    delayed = [Echo.dispatch(i).delay(60).send() for i in range(10)]
    assert q.empty() == 12_355
    c = q.counts()
    assert (c["waiting"], c["delayed"], c["cancelled"]) == (0, 0, 12_355)
    assert res.handle(12_000).status() == "cancelled" and delayed[3].status() == "cancelled"
    q.resume()
    assert running.wait_result(timeout=10) == "finished"
    assert q.empty() == 0
    w.stop()


def test_empty_tells_the_flows_of_the_children_it_cancels(start_worker: Any) -> None:
    flow = JobFlow(Gather.dispatch(None))
    flow.add_child_job(Leaf.dispatch(1))
    handle = flow.dispatch()
    assert Queue("flows").empty() == 1
    with pytest.raises(fastjobs.JobFailed, match="cancelled"):
        handle.wait_result(timeout=10)


def test_obliterate_deletes_every_key_of_the_queue_and_refuses_while_jobs_run(start_worker: Any, redis: Any, prefix: str) -> None:
    Echo.dispatch_many(list(range(100)), queue="doomed")
    Echo.dispatch("later").on_queue("doomed").delay(60).send()
    Leaf.dispatch(-1).on_queue("doomed").attempts(1).send()
    Echo.dispatch("kept").on_queue("other").send()
    q = Queue("doomed")
    q.pause()
    assert q.obliterate() > 0
    assert redis("KEYS", f"{prefix}:{{doomed}}:*") == []
    assert "doomed" not in [x.name for x in Queue.all()] and "other" in [x.name for x in Queue.all()]
    assert Queue("other").counts()["waiting"] == 1
    start_worker(queues=["busy"])
    h = Patient.dispatch({"seconds": 30}).on_queue("busy").send()
    eventually(lambda: h.status() == "active")
    with pytest.raises(ValueError, match="1 running job"):
        Queue("busy").obliterate()
    h.cancel()
    with pytest.raises(fastjobs.JobCancelled):
        h.wait_result(timeout=10)


def test_bad_requests_are_typed_errors() -> None:
    with pytest.raises(fastjobs.UnknownJobError):
        Queue("default").cancel("never-dispatched")
    with pytest.raises(fastjobs.UnknownJobError):
        Queue("default").cancel("abcdefghij-12")  # a generated id beyond any producer's mark
    with pytest.raises(fastjobs.UnknownQueueError):
        Queue("nowhere").empty()
    with pytest.raises(fastjobs.UnknownQueueError):
        Queue("nowhere").obliterate()


def test_async_twins() -> None:
    async def go() -> tuple[str, int, str]:
        h = await Echo.dispatch("x").on_queue("twins")
        state = await Queue("twins").cancel_async(h.id)
        await Echo.dispatch("y").on_queue("twins")
        n = await Queue("twins").empty_async()
        h2 = await Echo.dispatch("z").on_queue("twins")
        removed = await Queue("twins").remove_async(h2.id)
        return state, n, removed

    assert asyncio.run(go()) == ("waiting", 1, "waiting")


def test_cancelling_or_emptying_frees_a_deduplication_key_held_until_settled() -> None:
    first = Echo.dispatch(1).on_queue("idle").deduplicate("report-7").send()
    assert Echo.dispatch(2).on_queue("idle").deduplicate("report-7").send().deduplicated
    assert first.cancel() == "waiting"
    second = Echo.dispatch(3).on_queue("idle").deduplicate("report-7").send()
    assert second.created and second.id != first.id
    assert Queue("idle").empty() == 1
    assert Echo.dispatch(4).on_queue("idle").deduplicate("report-7").send().created


def test_a_job_asked_to_cancel_whose_worker_dies_is_cancelled_not_run_again(spawn_worker: Any, redis: Any, prefix: str) -> None:
    doomed = spawn_worker("--queue", "default", "--lease", "1")
    h = Patient.dispatch({"seconds": 60, "ignore": True}).send()
    eventually(lambda: stamps(redis, prefix), timeout=15)
    assert h.cancel() == "active"
    doomed.proc.kill()  # dies before its handler gave up: the reaper settles the request
    doomed.proc.wait()
    spawn_worker("--queue", "default", "--lease", "1")
    with pytest.raises(fastjobs.JobCancelled):
        h.wait_result(timeout=20)
    assert h.status() == "cancelled"
    assert len(stamps(redis, prefix)) == 1  # it never ran again
    assert Queue("default").counts()["cancelled"] == 1
