"""JobChain on a real Redis with real workers: order, results passed on, delays between steps,
stop on failure with on_failure, idempotent continuation, bad input."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import JobChain, Queue
from fastjobs import chain as chains

RUNS: list[tuple[str, Any, Any, float]] = []


class Step(fastjobs.Job[str, str]):
    """Records (payload, previous result, queue, time) and returns payload + previous."""

    def process(self, payload: str) -> str:
        RUNS.append((payload, self.previous_result, self.queue_name, time.monotonic()))
        return f"{self.previous_result or ''}{payload}"


class AsyncStep(fastjobs.Job[str, str]):
    async def process(self, payload: str) -> str:
        RUNS.append((payload, self.previous_result, self.queue_name, time.monotonic()))
        return f"{self.previous_result or ''}{payload}"


class Boom(fastjobs.Job[str, None]):
    def process(self, payload: str) -> None:
        RUNS.append((payload, self.previous_result, self.queue_name, time.monotonic()))
        raise RuntimeError(f"step {payload} broke")


class OnFailure(fastjobs.Job[dict, str]):
    def process(self, payload: dict) -> str:
        failure = self.chain_failure or {}
        RUNS.append(("on_failure", failure, payload, time.monotonic()))
        return f"{failure.get('name')}: {failure.get('error', {}).get('message')}"


@pytest.fixture(autouse=True)
def clear() -> None:
    RUNS.clear()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_steps_run_in_order_across_queues_and_pass_results_on(start_worker: Any, api: str) -> None:
    start_worker(queues=["a", "b", "default"], concurrency=4)
    chain = JobChain([Step.dispatch("x").on_queue("a"), AsyncStep.dispatch("y").on_queue("b"), Step.dispatch("z")])
    if api == "sync":
        handle = chain.dispatch()
        assert handle.wait_result(timeout=10) == "xyz"
    else:

        async def go() -> Any:
            h = await chain
            return h, await h.wait_result_async(timeout=10)

        handle, result = asyncio.run(go())
        assert result == "xyz"
    assert [(p, prev, q) for p, prev, q, _ in RUNS] == [("x", None, "a"), ("y", "x", "b"), ("z", "xy", "default")]
    assert [s.state for s in handle.steps()] == ["completed"] * 3
    assert [s.name for s in handle.steps()] == ["Step", "AsyncStep", "Step"]


def test_a_delayed_step_waits_its_delay_after_the_previous_one(start_worker: Any) -> None:
    start_worker()
    handle = JobChain([Step.dispatch("a"), Step.dispatch("b").delay(0.4)]).dispatch()
    assert handle.wait_result(timeout=10) == "ab"
    assert RUNS[1][3] - RUNS[0][3] >= 0.39


def test_a_failed_step_stops_the_chain_and_dispatches_on_failure(start_worker: Any) -> None:
    chain = JobChain([Step.dispatch("1"), Boom.dispatch("2"), Step.dispatch("3")], on_failure=OnFailure.dispatch({"who": "ops"}))
    handle = chain.dispatch()
    assert [s.state for s in handle.steps()] == ["waiting", "pending", "pending"]
    start_worker()
    with pytest.raises(fastjobs.JobFailed) as e:
        handle.wait_result(timeout=10)
    assert e.value.exc_type == "RuntimeError" and e.value.message == "step 2 broke"
    failure = handle.failure_handle()
    assert failure is not None and failure.wait_result(timeout=10) == "Boom: step 2 broke"
    assert [s.state for s in handle.steps()] == ["completed", "failed", "cancelled"]
    assert [r[0] for r in RUNS] == ["1", "2", "on_failure"]
    details, payload = RUNS[-1][1], RUNS[-1][2]
    assert payload == {"who": "ops"}
    assert details["step"] == 1 and details["job_id"] == handle.steps()[1].job_id and details["error"]["type"] == "RuntimeError"
    assert "Traceback" in details["error"]["traceback"]


def test_a_step_retried_then_successful_continues_the_chain(start_worker: Any) -> None:
    start_worker()
    handle = JobChain([Boom.dispatch("flaky").attempts(2).backoff(0.01), Step.dispatch("never")]).dispatch()
    with pytest.raises(fastjobs.JobFailed):
        handle.wait_result(timeout=10)
    assert [r[0] for r in RUNS] == ["flaky", "flaky"]  # both attempts ran before the chain stopped
    assert handle.failure_handle() is None


def test_continuation_is_idempotent() -> None:
    # A worker that dies after enqueueing the next step but before acknowledging its own runs
    # the step again: the next step must not be enqueued twice.
    handle = JobChain([Step.dispatch("a").on_queue("one"), Step.dispatch("b").on_queue("two")]).dispatch()
    client = fastjobs.config.client()
    place = {"id": handle.id, "step": 0, "n": 2}
    chains.step_completed(client, place, b'"a"')
    chains.step_completed(client, place, b'"a"')
    assert Queue("two").size() == 1
    assert chains.previous_result(client, {"id": handle.id, "step": 1, "n": 2}) == "a"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: JobChain([]), "at least one step"),
        (lambda: JobChain([Step.dispatch("a").job_id("mine")]), "has a job_id"),
        (lambda: JobChain(["not a builder"]), "dispatch builders"),  # type: ignore[list-item]
    ],
)
def test_bad_chains(make: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_a_builder_cannot_serve_twice() -> None:
    b = Step.dispatch("a")
    with pytest.raises(ValueError, match="appears twice"):
        JobChain([b, b])
    with pytest.raises(ValueError, match="appears twice"):
        JobChain([b], on_failure=b)
    sent = Step.dispatch("s")
    sent.send()
    with pytest.raises(ValueError, match="already sent"):
        JobChain([sent])
    JobChain([b]).dispatch()
    with pytest.raises(ValueError, match="already sent"):
        JobChain([b])


def test_unknown_chain() -> None:
    with pytest.raises(LookupError, match="no chain"):
        fastjobs.ChainHandle("nope").steps()


def test_a_chain_survives_a_worker_killed_mid_step(spawn_worker: Any, redis: Any, prefix: str) -> None:
    import signal

    from .apps.jobs import Sleep, Stamp, stamps
    from .conftest import eventually

    handle = JobChain([Sleep.dispatch({"seconds": 1.5}), Stamp.dispatch("b"), Stamp.dispatch("c")]).dispatch()
    victim = spawn_worker("--queue", "default", "--queue", "stamps", "--lease", "1")
    eventually(lambda: handle.steps()[0].state == "active", timeout=30)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    spawn_worker("--queue", "default", "--queue", "stamps", "--lease", "1")
    handle.wait_result(timeout=60)
    assert [s.state for s in handle.steps()] == ["completed"] * 3
    assert sorted(r[0] for r in stamps(redis, prefix)) == [handle.steps()[1].job_id, handle.steps()[2].job_id]  # once each
