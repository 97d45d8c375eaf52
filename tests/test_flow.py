"""JobFlow on a real Redis with real workers: parents after children, results, failure
policies, nesting, queues, many flows at once, idempotent settlement, worker crashes."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import JobFlow, Queue

from .apps.jobs import Gather, Leaf, SlowLeaf, stamps
from .conftest import eventually
from .resp import Redis


def test_parent_runs_after_its_children_and_reads_their_results(start_worker: Any, redis: Redis, prefix: str) -> None:
    flow = JobFlow(Gather.dispatch(None))
    for i in (1, 2, 3):
        flow.add_child_job(Leaf.dispatch(i))
    handle = flow.dispatch()
    tree = handle.tree()
    assert tree.state == "waiting-children" and [c.state for c in tree.children] == ["waiting"] * 3
    start_worker(queues=["flows"], concurrency=4)
    assert handle.wait_result(timeout=10) == {"count": 3, "sum": 6, "errors": []}
    tree = handle.tree()
    assert tree.state == "completed" and [c.state for c in tree.children] == ["completed"] * 3
    assert [c.name for c in tree.children] == ["Leaf"] * 3 and tree.job_id == f"flow:{handle.id}:0"
    assert len(stamps(redis, prefix)) == 1


def test_children_results_by_child_id_with_names(start_worker: Any) -> None:
    class Peek(fastjobs.Job[None, dict]):
        queue = "flows"

        def process(self, payload: None) -> dict:
            return self.children_results()

    start_worker(queues=["flows", "other"], jobs=[Peek, Leaf])
    handle = JobFlow(Peek.dispatch(None)).add_child_job(Leaf.dispatch(7).on_queue("other")).dispatch()
    child = handle.tree().children[0]
    assert child.queue == "other"
    assert handle.wait_result(timeout=10) == {child.job_id: {"name": "Leaf", "result": 7}}


def test_nested_flow_of_depth_five(start_worker: Any) -> None:
    def grow(flow: JobFlow, depth: int) -> None:
        flow.add_child_job(Leaf.dispatch(depth))
        if depth < 5:
            flow.add_child_job(Gather.dispatch(None), nested=lambda f: grow(f, depth + 1))

    root = JobFlow(Gather.dispatch(None))
    grow(root, 1)
    handle = root.dispatch()
    depth, node = 0, handle.tree()
    while node.children:
        depth += 1
        node = next((c for c in node.children if c.children), node.children[0])
    assert depth == 5
    start_worker(queues=["flows"], concurrency=4)
    # Each Gather sums its leaf and the sum of the Gather below it: 1 + 2 + 3 + 4 + 5.
    assert handle.wait_result(timeout=20) == {"count": 2, "sum": 15, "errors": []}


@pytest.mark.parametrize("policy", ["fail_parent", "ignore", "continue_parent"])
def test_child_failure_policies(policy: str, start_worker: Any, redis: Redis, prefix: str) -> None:
    flow = JobFlow(Gather.dispatch(None)).add_child_job(Leaf.dispatch(1)).add_child_job(Leaf.dispatch(-1), on_failure=policy)
    handle = flow.dispatch()
    start_worker(queues=["flows"])
    if policy == "fail_parent":
        with pytest.raises(fastjobs.JobFailed) as e:
            handle.wait_result(timeout=10)
        assert e.value.exc_type == "ValueError" and e.value.message == "leaf -1 refused"
        assert handle.tree().state == "failed" and stamps(redis, prefix) == []  # the parent never ran
    elif policy == "ignore":
        assert handle.wait_result(timeout=10) == {"count": 2, "sum": 1, "errors": ["leaf -1 refused"]}
    else:
        assert handle.wait_result(timeout=10) == {"count": 1, "sum": 1, "errors": []}


def test_a_failure_climbs_the_tree_under_fail_parent(start_worker: Any) -> None:
    root = JobFlow(Gather.dispatch(None)).add_child_job(Gather.dispatch(None), nested=[Leaf.dispatch(-5)])
    handle = root.dispatch()
    start_worker(queues=["flows"])
    with pytest.raises(fastjobs.JobFailed, match="leaf -5 refused"):
        handle.wait_result(timeout=10)
    # The flow hears of the failure before the leaf's own failure is acknowledged (so a crash
    # between the two cannot lose it): the leaf may show `active` for a moment.
    eventually(lambda: handle.tree().children[0].children[0].state == "failed", timeout=5)
    tree = handle.tree()
    assert tree.state == "failed" and tree.children[0].state == "failed" and tree.children[0].children[0].state == "failed"


def test_settlement_is_counted_once() -> None:
    # A child run again after its worker died settles again: counted once, same answer.
    handle = JobFlow(Gather.dispatch(None)).add_child_job(Leaf.dispatch(1)).add_child_job(Leaf.dispatch(2)).dispatch()
    client = fastjobs.config.client()
    place = {"id": handle.id, "node": 1, "parent": 0, "policy": "fail_parent"}
    for _ in range(3):
        fastjobs.flow.node_completed(client, place, f"flow:{handle.id}:1", "Leaf", b"1")
    assert handle.tree().state == "waiting-children"
    for _ in range(2):
        fastjobs.flow.node_completed(client, {**place, "node": 2}, f"flow:{handle.id}:2", "Leaf", b"2")
    assert Queue("flows").size() == 2 + 1  # the two leaves, and the parent once


def test_many_flows_at_once_and_async_dispatch(start_worker: Any) -> None:
    flows = [JobFlow(Gather.dispatch(None)).add_child_job(Leaf.dispatch(i)).add_child_job(Leaf.dispatch(10 * i)) for i in range(50)]
    handles = JobFlow.dispatch_many(flows)

    async def one() -> Any:
        return await JobFlow(Gather.dispatch(None)).add_child_job(Leaf.dispatch(5))

    extra = asyncio.run(one())
    start_worker(queues=["flows"], concurrency=4)
    assert [h.wait_result(timeout=20)["sum"] for h in handles] == [11 * i for i in range(50)]
    assert asyncio.run(extra.wait_result_async(timeout=10))["sum"] == 5


def test_bad_flows() -> None:
    with pytest.raises(ValueError, match="at least one child"):
        JobFlow(Gather.dispatch(None)).dispatch()
    b = Leaf.dispatch(1)
    with pytest.raises(ValueError, match="appears twice"):
        JobFlow(Gather.dispatch(None)).add_child_job(b).add_child_job(b).dispatch()
    f = JobFlow(Gather.dispatch(None))
    with pytest.raises(ValueError, match="unknown on_failure policy"):
        f.add_child_job(Leaf.dispatch(1), on_failure="explode")
    f.add_child_job(Leaf.dispatch(2)).dispatch()  # the flow stays usable
    with pytest.raises(ValueError, match="has a job_id"):
        JobFlow(Gather.dispatch(None)).add_child_job(Leaf.dispatch(1).job_id("x")).dispatch()
    with pytest.raises(TypeError, match="dispatch builder"):
        JobFlow("nope")  # type: ignore[arg-type]
    with pytest.raises(LookupError, match="no flow"):
        fastjobs.FlowHandle("0123abcd").tree()


def test_ten_thousand_children_on_three_worker_processes(spawn_worker: Any, redis: Redis, prefix: str) -> None:
    flow = JobFlow(Gather.dispatch(None))
    for i in range(10_000):
        flow.add_child_job(Leaf.dispatch(i))
    handle = flow.dispatch()
    for _ in range(3):
        spawn_worker("--queue", "flows", "--concurrency", "4")
    assert handle.wait_result(timeout=120) == {"count": 10_000, "sum": sum(range(10_000)), "errors": []}
    assert len(stamps(redis, prefix)) == 1  # the parent ran once


def test_sigkill_of_a_worker_mid_flow_still_runs_the_parent_once(spawn_worker: Any, redis: Redis, prefix: str) -> None:
    flow = JobFlow(Gather.dispatch(None))
    for _ in range(40):
        flow.add_child_job(SlowLeaf.dispatch(0.05))
    handle = flow.dispatch()
    victim = spawn_worker("--queue", "flows", "--concurrency", "4", "--lease", "1")
    eventually(lambda: Queue("flows").counts()["completed"] >= 5, timeout=30)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    spawn_worker("--queue", "flows", "--concurrency", "4", "--lease", "1")
    started = time.monotonic()
    result = handle.wait_result(timeout=60)
    assert result["count"] == 40 and result["sum"] == pytest.approx(2.0)
    assert time.monotonic() - started < 60
    assert len(stamps(redis, prefix)) == 1
