"""Groups within a queue, on a real Redis with real workers: a group with a flood of jobs does
not hold up a small one (the interleaving is measured), per-group rate and concurrency limits
hold each group on its own (the concurrency limit across two worker processes) and pass over a
group at its limit, and grouped jobs stay correct under pause, cancel, remove, empty, delays,
retries and a dead worker, in bulk, in chains and in handlers (`self.group`); bad groups and
limits are typed errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, QueueLimits

from .apps.jobs import Span, WhichGroup, WhichGroupAsync, spans
from .conftest import eventually


def key(prefix: str, name: str) -> str:
    return f"{prefix}:{{groups}}:{name}"


def most_at_once(runs: list[tuple[str, int, float, float]]) -> int:
    """The most runs in progress at one instant (an end before a start at the same ms)."""
    edges = sorted([(r[2], 1) for r in runs] + [(r[3], -1) for r in runs], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _t, d in edges:
        now += d
        most = max(most, now)
    return most


@pytest.mark.redis_only
def test_a_flooding_group_does_not_hold_up_a_small_one(start_worker: Any, redis: Any, prefix: str) -> None:
    q = Queue("groups")
    Span.dispatch_many([{"g": "A"}] * 10_000, group="A")  # the flood, first
    Span.dispatch_many([{"g": "B"}] * 100, group=lambda p: p["g"])  # then a small group
    assert q.counts()["waiting"] == 10_100
    assert redis("LLEN", key(prefix, "wait")) == 0  # in their groups' lists, not the ready list
    assert redis("LLEN", key(prefix, "group:A")) == 10_000 and redis("LLEN", key(prefix, "group:B")) == 100
    start_worker(queues=["groups"], concurrency=1)
    eventually(lambda: sum(1 for s in spans(redis, prefix) if s[0] == "B") == 100, timeout=60)
    order = "".join(s[0] for s in spans(redis, prefix))
    last_b = order.rindex("B")
    waiting = q.counts()["waiting"]
    print(f"\ngroups A (10,000 jobs, dispatched first) and B (100): B's last job ended as job {last_b + 1} of the "
          f"queue, after {order[: last_b + 1].count('A')} of A's; first 48 in order: {order[:48]}; "
          f"{waiting} of A's still waiting then")
    assert last_b < 400, order[:500]  # in turns: about 200; first come, first served: 10,100
    assert order[:40].count("B") >= 15, order[:40]  # interleaved from the start
    assert waiting > 9_000
    assert q.empty() >= 9_000  # the rest of the flood goes
    eventually(lambda: q.counts()["waiting"] == 0 and q.counts()["active"] == 0)
    assert redis("EXISTS", key(prefix, "groups"), key(prefix, "group:A"), key(prefix, "gwaiting")) == 0


def test_a_per_group_rate_limit_holds_each_group_and_leaves_the_others_running(start_worker: Any, redis: Any,
                                                                                prefix: str) -> None:
    q = Queue("groups")
    Span.dispatch({"g": "-"}).send()  # the queue is known
    q.set_group_limits(rate=5, per="1s")
    assert q.group_limits() == QueueLimits(rate=5, per=1.0, concurrency=None)
    assert q.limits() == QueueLimits()  # the queue's own limits are another thing
    for g in "AB":
        Span.dispatch_many([{"g": g}] * 40, group=g)
    Span.dispatch_many([{"g": "-"}] * 20)  # not in a group: not limited
    start_worker(queues=["groups"], concurrency=4)
    time.sleep(3.5)
    runs = spans(redis, prefix)
    assert sum(1 for r in runs if r[0] == "-") == 21  # ungrouped jobs ran at once
    firsts = {}
    for g in "AB":
        starts = sorted(r[2] for r in runs if r[0] == g)
        firsts[g] = starts[0]
        in_window = sum(1 for s in starts if s < starts[0] + 2_500)
        print(f"group {g}: {in_window} jobs started in the first 2.5 s at 5 per 1 s ({len(starts)} in 3.5 s)")
        assert 10 <= in_window <= 15, (g, in_window)
        assert len(starts) <= 20, (g, len(starts))
    assert abs(firsts["A"] - firsts["B"]) < 500  # B did not wait for A's limit
    q.set_group_limits()
    assert q.group_limits() == QueueLimits()
    eventually(lambda: len(spans(redis, prefix)) == 101, timeout=10)  # cleared: the rest at once


def test_a_per_group_concurrency_limit_holds_across_two_worker_processes(spawn_worker: Any, redis: Any,
                                                                         prefix: str) -> None:
    q = Queue("groups")
    Span.dispatch({"g": "-"}).send()
    q.set_group_limits(concurrency=2)
    for g in "AB":
        Span.dispatch_many([{"g": g, "seconds": 0.25}] * 10, group=g)
    workers = [spawn_worker("--queue", "groups", "--concurrency", "4") for _ in range(2)]
    eventually(lambda: len(spans(redis, prefix)) == 21, timeout=30)
    runs = spans(redis, prefix)
    most = {g: most_at_once([r for r in runs if r[0] == g]) for g in "AB"}
    both = most_at_once([r for r in runs if r[0] in "AB"])
    pids = {r[1] for r in runs if r[0] in "AB"}
    print(f"\nper-group concurrency 2 on 2 workers x 4 threads: most at once A={most['A']} B={most['B']}, both groups {both}, "
          f"{len(pids)} worker processes")
    assert most == {"A": 2, "B": 2}, most  # the limit, reached and never passed
    assert both >= 3  # the groups ran beside each other
    assert len(pids) == 2
    assert redis("HLEN", key(prefix, "gactive")) == 0  # every lease that ended gave its place back
    for w in workers:
        w.proc.terminate()
        assert "0 stale" in w.output()


def test_an_idle_worker_is_not_handed_a_grouped_job_past_its_limit(start_worker: Any, redis: Any, prefix: str) -> None:
    q = Queue("groups")
    Span.dispatch({"g": "-"}).send()
    q.set_group_limits(concurrency=1)
    start_worker(queues=["groups"], concurrency=4)
    eventually(lambda: len(spans(redis, prefix)) == 1)
    time.sleep(0.3)  # the worker is idle, its slot registered
    for _ in range(3):
        Span.dispatch({"g": "A", "seconds": 0.3}).group("A").send()
    Span.dispatch({"g": "-"}).send()  # an ungrouped job still goes straight through
    eventually(lambda: len(spans(redis, prefix)) == 5, timeout=10)
    runs = spans(redis, prefix)
    assert most_at_once([r for r in runs if r[0] == "A"]) == 1
    assert runs[1][0] == "-"  # not held up behind the group


@pytest.mark.redis_only
def test_grouped_jobs_are_counted_paused_cancelled_removed_and_emptied(start_worker: Any, redis: Any,
                                                                       prefix: str) -> None:
    q = Queue("groups")
    Span.dispatch({"g": "-"}).send()
    q.pause()
    a = [Span.dispatch({"g": "A", "i": i}).group("A").send() for i in range(5)]
    b = [Span.dispatch({"g": "B", "i": i}).with_("group", "B").send() for i in range(3)]
    Span.dispatch_many([{"g": "C"}] * 50, group="C")
    assert q.counts()["waiting"] == 59
    assert q.cancel(a[2].id) == "waiting" and a[2].status() == "cancelled"
    assert q.remove(b[1].id) == "waiting"
    assert q.counts()["waiting"] == 57
    assert redis("LLEN", key(prefix, "group:A")) == 4 and redis("LLEN", key(prefix, "group:B")) == 2
    start_worker(queues=["groups"], concurrency=2)
    time.sleep(1.0)
    assert spans(redis, prefix) == []  # paused: nothing of the queue runs, grouped or not
    assert q.resume() is True
    assert [h.wait_result(timeout=10) for h in (a[0], a[1], a[3], a[4], b[0], b[2])] == [None] * 6
    with pytest.raises(fastjobs.JobCancelled):
        a[2].wait_result(timeout=5)
    eventually(lambda: q.counts()["completed"] == 57)
    assert sorted(s[0] for s in spans(redis, prefix)).count("C") == 50
    # Emptied: grouped and ungrouped waiting jobs, and the groups' bookkeeping with them.
    q.pause()
    late = Span.dispatch_many([{"g": "D"}] * 20, group="D")
    Span.dispatch_many([{"g": "-"}] * 5)
    delayed = Span.dispatch({"g": "E"}).group("E").delay("1h").send()
    assert q.counts()["waiting"] == 25
    assert q.empty() == 26
    assert late.handle(0).status() == "cancelled" and delayed.status() == "cancelled"
    assert q.counts()["waiting"] == 0
    assert redis("EXISTS", key(prefix, "groups"), key(prefix, "group:D"), key(prefix, "gwaiting")) == 0
    q.resume()
    assert Span.dispatch({"g": "D"}).group("D").send().wait_result(timeout=10) is None  # a new group runs


def test_delayed_and_retried_grouped_jobs_go_back_to_their_group(start_worker: Any, redis: Any, prefix: str) -> None:
    q = Queue("groups")
    Span.dispatch({"g": "-"}).send()
    q.set_group_limits(concurrency=1)
    start_worker(queues=["groups"], concurrency=4)
    later = Span.dispatch({"g": "A"}).group("A").delay(0.5).send()
    assert later.status() == "delayed"
    again_now = Span.dispatch({"g": "A", "fail_first": True}).group("A").attempts(2).backoff(0).send()
    again_later = Span.dispatch({"g": "A", "fail_first": True}).group("A").attempts(2).backoff(0.3).send()
    assert [h.wait_result(timeout=15) for h in (later, again_now, again_later)] == [None] * 3
    c = q.counts()
    assert (c["completed"], c["retried"]) == (4, 2), c
    # The group was never blocked by a place its retries kept: one more job of it runs.
    assert Span.dispatch({"g": "A"}).group("A").send().wait_result(timeout=10) is None
    assert most_at_once([r for r in spans(redis, prefix) if r[0] == "A"]) == 1
    assert redis("HLEN", key(prefix, "gactive")) == 0


def test_a_dead_workers_grouped_job_goes_back_to_its_group(spawn_worker: Any, redis: Any, prefix: str) -> None:
    q = Queue("groups")
    Span.dispatch({"g": "-"}).send()
    q.set_group_limits(concurrency=1)
    doomed = spawn_worker("--queue", "groups", "--concurrency", "2", "--lease", "1.5")
    stuck = Span.dispatch({"g": "A", "seconds": 60}).group("A").send()
    behind = Span.dispatch({"g": "A"}).group("A").send()
    eventually(lambda: stuck.status() == "active", timeout=15)
    time.sleep(0.5)
    assert behind.status() == "waiting"  # the group's one place is taken
    doomed.proc.kill()
    doomed.proc.wait()
    spawn_worker("--queue", "groups", "--concurrency", "2", "--lease", "5")
    # Reaped (within the reaper's 5 s round), back to the head of group A as an orphan: it runs
    # again (at once, being redelivered), then the one behind it.
    assert stuck.wait_result(timeout=20) is None
    assert behind.wait_result(timeout=10) is None
    assert [r[0] for r in spans(redis, prefix)][-2:] == ["A", "A"]
    assert q.counts()["stalled"] == 1
    assert redis("HLEN", key(prefix, "gactive")) == 0


def test_bad_groups_and_group_limits_are_typed_errors() -> None:
    Span.dispatch({"g": "-"}).send()
    q = Queue("groups")
    with pytest.raises(TypeError, match="group must be a str, got int"):
        Span.dispatch({}).group(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group must not be empty"):
        Span.dispatch({}).group("")
    with pytest.raises(ValueError, match="group must be at most 255 bytes"):
        Span.dispatch({}).group("g" * 256)
    with pytest.raises(ValueError, match="control characters"):
        Span.dispatch({}).group("a\nb")
    with pytest.raises(TypeError, match="group must be a str, got NoneType"):
        Span.dispatch({}).with_("group", None)
    with pytest.raises(TypeError, match="payload at index 1: group returned by the group function must be a str, got int"):
        Span.dispatch_many([{"g": "A"}, {"g": 7}], group=lambda p: p["g"])
    with pytest.raises(TypeError, match="group must be a str, got list"):
        Span.dispatch_many([{"g": "A"}], group=["A"])
    assert q.counts()["waiting"] == 1  # nothing of the refused dispatches was written
    with pytest.raises(ValueError, match="rate must be at least 1, got 0"):
        q.set_group_limits(rate=0, per="1s")
    with pytest.raises(TypeError, match="concurrency must be an int, got str"):
        q.set_group_limits(concurrency="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs both rate"):
        q.set_group_limits(per="1s")
    with pytest.raises(fastjobs.UnknownQueueError):
        Queue("nowhere").set_group_limits(concurrency=1)
    assert q.group_limits() == QueueLimits()
    assert Span.dispatch({"g": "-"}).group("g" * 255).send().created  # the longest key is taken
    assert q.counts()["waiting"] == 2


@pytest.mark.redis_only
def test_grouped_builders_in_bulk_async_limits_and_the_raw_bulk_path_kept_for_the_rest(start_worker: Any, redis: Any,
                                                                                       prefix: str) -> None:
    import asyncio

    q = Queue("groups")
    Span.dispatch({"g": "-"}).send()

    async def limits() -> QueueLimits:
        await q.set_group_limits_async(concurrency=3)
        return await q.group_limits_async()

    assert asyncio.run(limits()) == QueueLimits(concurrency=3)
    result = fastjobs.BulkDispatcher([Span.dispatch({"g": g}).group(g) for g in "ABAB"] + [Span.dispatch({"g": "-"})]).dispatch()
    assert redis("LLEN", key(prefix, "group:A")) == 2 and redis("LLEN", key(prefix, "group:B")) == 2
    # Jobs without a group still take the raw bulk write: runs of records, not one element each.
    Span.dispatch_many([{"g": "-"}] * 100)
    assert redis("LLEN", key(prefix, "wait")) < 20
    assert q.counts()["waiting"] == 106
    start_worker(queues=["groups"], concurrency=2)
    assert [h.wait_result(timeout=10) for h in result.handles()] == [None] * 5
    eventually(lambda: q.counts()["completed"] == 106)
    assert redis("EXISTS", key(prefix, "groups"), key(prefix, "gwaiting")) == 0
    assert redis("HLEN", key(prefix, "gactive")) == 0


@pytest.mark.redis_only
def test_a_chain_step_with_a_group_waits_in_its_group(start_worker: Any, redis: Any, prefix: str) -> None:
    chain = fastjobs.JobChain([Span.dispatch({"g": "A"}).group("A"), Span.dispatch({"g": "A"}).group("A")])
    handle = chain.dispatch()
    assert redis("LLEN", key(prefix, "group:A")) == 1 and redis("LLEN", key(prefix, "wait")) == 0
    start_worker(queues=["groups"])
    assert handle.wait_result(timeout=10) is None
    assert [s[0] for s in spans(redis, prefix)] == ["A", "A"]
    assert redis("HLEN", key(prefix, "gactive")) == 0


def test_the_handler_sees_its_group(start_worker: Any) -> None:
    grouped = WhichGroup.dispatch(None).group("tenant-42").send()
    plain = WhichGroup.dispatch(None).send()
    in_async = WhichGroupAsync.dispatch(None).group("tenant-7").send()
    start_worker(queues=["groups"])
    assert grouped.wait_result(timeout=10) == "tenant-42"
    assert plain.wait_result(timeout=10) is None
    assert in_async.wait_result(timeout=10) == "tenant-7"
    assert grouped.info().state == "completed"
