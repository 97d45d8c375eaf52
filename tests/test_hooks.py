"""Hooks on job classes and per dispatch, and middleware around handlers, with real workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import fastjobs
from fastjobs import hooks

from .apps.jobs import Echo, HookFlaky
from .conftest import eventually

#: What hooks and middleware saw, in order, per test (cleared by the autouse fixture).
SEEN: list[tuple[Any, ...]] = []


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    SEEN.clear()
    yield
    SEEN.clear()


class HookedSum(fastjobs.Job[dict, int]):
    queue = "hooks"

    def process(self, payload: dict) -> int:
        SEEN.append(("process", self.job_id))
        return int(payload["a"] + payload["b"])

    def on_complete(self, result: int) -> None:
        SEEN.append(("complete", self.job_id, result, self.attempt, self.meta, self.queue_name))


class HookedFailing(fastjobs.Job[dict, None]):
    queue = "hooks"
    attempts = 3
    backoff = fastjobs.Backoff.fixed(0)

    def process(self, payload: dict) -> None:
        raise ValueError(f"attempt {self.attempt} refused")

    def on_complete(self, result: Any) -> None:
        SEEN.append(("complete", self.job_id))

    def on_retry(self, error: BaseException, delay: float) -> None:
        SEEN.append(("retry", self.job_id, self.attempt, str(error), delay))

    def on_failure(self, error: BaseException) -> None:
        SEEN.append(("failure", self.job_id, self.attempt, type(error).__name__, str(error)))


class HookedRaising(fastjobs.Job[dict, str]):
    """Its hooks raise: the job's outcome stands. payload["fail"]: every attempt fails."""

    queue = "hooks"
    attempts = 2
    backoff = fastjobs.Backoff.fixed(0)

    def process(self, payload: dict) -> str:
        if payload.get("fail") or (payload.get("fail_first") and self.attempt == 0):
            raise RuntimeError("handler failed")
        return "done"

    def on_complete(self, result: str) -> None:
        SEEN.append(("complete", self.job_id))
        raise KeyError("complete hook broke")

    def on_retry(self, error: BaseException, delay: float) -> None:
        SEEN.append(("retry", self.job_id))
        raise KeyError("retry hook broke")

    def on_failure(self, error: BaseException) -> None:
        SEEN.append(("failure", self.job_id))
        raise KeyError("failure hook broke")


class HookedAsync(fastjobs.Job[dict, str]):
    queue = "hooks-async"
    attempts = 2
    backoff = fastjobs.Backoff.fixed(0)

    async def process(self, payload: dict) -> str:
        await asyncio.sleep(0)
        if payload.get("fail_first") and self.attempt == 0:
            raise RuntimeError("first attempt")
        if payload.get("fail"):
            raise RuntimeError("always")
        return f"async {payload['n']}"

    async def on_complete(self, result: str) -> None:
        await asyncio.sleep(0)
        SEEN.append(("complete", self.job_id, result, asyncio.get_running_loop() is not None))

    async def on_retry(self, error: BaseException, delay: float) -> None:
        SEEN.append(("retry", self.job_id, str(error)))

    def on_failure(self, error: BaseException) -> None:  # a plain hook on an async class: called on the loop
        SEEN.append(("failure", self.job_id, str(error)))


class HookedPlain(fastjobs.Job[dict, Any]):
    """No hooks of its own: dispatches add theirs."""

    queue = "hooks"
    attempts = 2
    backoff = fastjobs.Backoff.fixed(0)

    def process(self, payload: dict) -> Any:
        if payload.get("fail_first") and self.attempt == 0:
            raise RuntimeError("first attempt")
        if payload.get("fail"):
            raise RuntimeError("always")
        return payload.get("result")


class HookedPlainAsync(fastjobs.Job[dict, Any]):
    queue = "hooks-async"

    async def process(self, payload: dict) -> Any:
        if payload.get("fail"):
            raise RuntimeError("async failed")
        return payload.get("result")


@fastjobs.hook
def on_done(job: fastjobs.Job[Any, Any], result: Any) -> None:
    SEEN.append(("dispatch-complete", job.job_id, result, type(job).__name__))


@fastjobs.hook("tests:on-failed")
def on_failed(job: fastjobs.Job[Any, Any], error: BaseException) -> None:
    SEEN.append(("dispatch-failure", job.job_id, str(error)))


@fastjobs.hook
async def on_retried(job: fastjobs.Job[Any, Any], error: BaseException, delay: float) -> None:
    await asyncio.sleep(0)
    SEEN.append(("dispatch-retry", job.job_id, str(error), delay))


@fastjobs.hook
def broken_hook(job: fastjobs.Job[Any, Any], result: Any) -> None:
    SEEN.append(("broken", job.job_id))
    raise RuntimeError("broken hook")


def not_registered(job: fastjobs.Job[Any, Any], result: Any) -> None:  # pragma: no cover - refused at dispatch
    pass


def events(kind: str) -> list[tuple[Any, ...]]:
    return [e for e in SEEN if e[0] == kind]


# ---- class hooks ----


def test_on_complete_runs_on_the_instance_that_ran_process(start_worker: Any) -> None:
    start_worker(queues=["hooks"], jobs=[HookedSum])
    handle = HookedSum.dispatch({"a": 2, "b": 3}).meta({"user": "ada"}).send()
    assert handle.wait_result(timeout=10) == 5
    eventually(lambda: events("complete"))
    assert SEEN == [("process", handle.id), ("complete", handle.id, 5, 0, {"user": "ada"}, "hooks")]


def test_on_retry_then_on_failure(start_worker: Any) -> None:
    start_worker(queues=["hooks"], jobs=[HookedFailing])
    handle = HookedFailing.dispatch({}).send()
    with pytest.raises(fastjobs.JobFailed, match="attempt 2 refused"):
        handle.wait_result(timeout=10)
    eventually(lambda: events("failure"))
    assert SEEN == [
        ("retry", handle.id, 0, "attempt 0 refused", 0.0),
        ("retry", handle.id, 1, "attempt 1 refused", 0.0),
        ("failure", handle.id, 2, "ValueError", "attempt 2 refused"),
    ]


def test_a_raising_hook_is_logged_and_the_outcome_stands(start_worker: Any, caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="fastjobs")
    start_worker(queues=["hooks"], jobs=[HookedRaising])
    ok = HookedRaising.dispatch({}).send()
    assert ok.wait_result(timeout=10) == "done"
    retried = HookedRaising.dispatch({"fail_first": True}).send()
    assert retried.wait_result(timeout=10) == "done"
    failed = HookedRaising.dispatch({"fail": True}).send()
    with pytest.raises(fastjobs.JobFailed, match="handler failed"):
        failed.wait_result(timeout=10)
    eventually(lambda: ("failure", failed.id) in SEEN and ("complete", retried.id) in SEEN)
    assert ok.status() == retried.status() == "completed"
    assert failed.status() == "failed"
    assert ("retry", retried.id) in SEEN and ("retry", failed.id) in SEEN
    eventually(lambda: "failure hook broke" in caplog.text)
    for text in ("complete hook broke", "retry hook broke", "failure hook broke"):
        assert text in caplog.text
    assert "Traceback" in caplog.text
    assert f"job {ok.id} (HookedRaising): its complete hook HookedRaising.on_complete raised" in caplog.text


def test_async_class_hooks_are_awaited_on_the_loop(start_worker: Any) -> None:
    start_worker(queues=["hooks-async"], jobs=[HookedAsync])
    ok = HookedAsync.dispatch({"n": 1, "fail_first": True}).send()
    assert ok.wait_result(timeout=10) == "async 1"
    failed = HookedAsync.dispatch({"n": 2, "fail": True}).send()
    with pytest.raises(fastjobs.JobFailed):
        failed.wait_result(timeout=10)
    eventually(lambda: events("failure") and events("complete"))
    assert ("retry", ok.id, "first attempt") in SEEN
    assert ("complete", ok.id, "async 1", True) in SEEN
    assert ("retry", failed.id, "always") in SEEN
    assert ("failure", failed.id, "always") in SEEN


def test_a_cancelled_job_runs_no_failure_hook(start_worker: Any) -> None:
    class HookedCancelled(fastjobs.Job[dict, None]):
        queue = "hooks-cancel"

        def process(self, payload: dict) -> None:
            SEEN.append(("started", self.job_id))
            eventually(lambda: self.cancelled, timeout=10)
            self.check_cancelled()

        def on_failure(self, error: BaseException) -> None:
            SEEN.append(("failure", self.job_id))

    start_worker(queues=["hooks-cancel"], jobs=[HookedCancelled])
    handle = HookedCancelled.dispatch({}).send()
    eventually(lambda: events("started"))
    handle.cancel()
    with pytest.raises(fastjobs.JobCancelled):
        handle.wait_result(timeout=10)
    assert not events("failure")


# ---- hooks per dispatch ----


def test_dispatch_hooks_run_with_the_job(start_worker: Any) -> None:
    start_worker(queues=["hooks"], jobs=[HookedPlain])
    ok = HookedPlain.dispatch({"result": [1, 2]}).on_complete(on_done).on_failure(on_failed).send()
    assert ok.wait_result(timeout=10) == [1, 2]
    retried = HookedPlain.dispatch({"fail_first": True}).on_retry(on_retried).with_("on_complete", [on_done, "tests.test_hooks:on_done"]).send()
    assert retried.wait_result(timeout=10) is None
    failed = HookedPlain.dispatch({"fail": True}).with_("on_failure", "tests:on-failed").send()
    with pytest.raises(fastjobs.JobFailed):
        failed.wait_result(timeout=10)
    eventually(lambda: len(events("dispatch-complete")) == 3 and events("dispatch-failure"))
    assert events("dispatch-complete") == [("dispatch-complete", ok.id, [1, 2], "HookedPlain")] + [
        ("dispatch-complete", retried.id, None, "HookedPlain")] * 2
    assert events("dispatch-retry") == [("dispatch-retry", retried.id, "first attempt", 0.0)]
    assert events("dispatch-failure") == [("dispatch-failure", failed.id, "always")]
    later = HookedPlain.dispatch({}).on_complete(on_done).on_failure(on_failed).delay(3600).send()
    assert later.info().options["hooks"] == {"complete": ["tests.test_hooks:on_done"], "failure": ["tests:on-failed"]}


def test_dispatch_hooks_of_an_async_job_and_class_hooks_first(start_worker: Any) -> None:
    start_worker(queues=["hooks-async"], jobs=[HookedPlainAsync, HookedAsync])
    a = HookedPlainAsync.dispatch({"result": "r"}).on_complete(on_done).send()
    b = HookedAsync.dispatch({"n": 7}).on_complete(on_done).send()
    assert a.wait_result(timeout=10) == "r"
    assert b.wait_result(timeout=10) == "async 7"
    eventually(lambda: len(events("dispatch-complete")) == 2)
    assert ("dispatch-complete", a.id, "r", "HookedPlainAsync") in SEEN
    mine = [e[0] for e in SEEN if e[1] == b.id]
    assert mine == ["complete", "dispatch-complete"]


def test_an_unknown_or_broken_dispatch_hook_leaves_the_job_completed(start_worker: Any, caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="fastjobs")
    start_worker(queues=["hooks"], jobs=[HookedPlain])
    h = HookedPlain.dispatch({"result": 1}).on_complete("nowhere:missing").on_complete(broken_hook).on_complete(on_done).send()
    assert h.wait_result(timeout=10) == 1
    eventually(lambda: events("dispatch-complete"))
    assert [e[0] for e in SEEN] == ["broken", "dispatch-complete"]
    assert h.status() == "completed"
    assert "no hook named 'nowhere:missing' is registered in this worker" in caplog.text
    assert "broken hook" in caplog.text


def test_bulk_dispatches_carry_hooks(start_worker: Any) -> None:
    start_worker(queues=["hooks"], jobs=[HookedPlain])
    result = HookedPlain.dispatch_many([{"result": i} for i in range(5)], on_complete=on_done)
    keyed = HookedPlain.dispatch_many([{"result": 10}], on_complete=on_done, group="g1")
    mixed = fastjobs.BulkDispatcher([HookedPlain.dispatch({"result": 20}).on_complete(on_done)]).dispatch()
    for r in (result, keyed, mixed):
        for h in r.handles():
            h.wait_result(timeout=10)
    eventually(lambda: len(events("dispatch-complete")) == 7)
    assert sorted(e[2] for e in events("dispatch-complete")) == [0, 1, 2, 3, 4, 10, 20]


def test_dispatch_hooks_across_processes(spawn_worker: Any, redis: Any, prefix: str) -> None:
    """A worker process finds the hooks by name in its modules; its middleware (registered at
    import) wraps every call and sees the handler's exception."""
    w = spawn_worker("--queue", "hooked", "--queue", "default", modules=["tests.apps.jobs", "tests.apps.hook_jobs"])
    ok = Echo.dispatch({"x": 1}).on_complete("tests.apps.hook_jobs:record_complete").send()
    flaky = HookFlaky.dispatch({}).on_retry("tests.apps.hook_jobs:record_retry").on_complete("tests.apps.hook_jobs:record_complete").send()
    doomed = HookFlaky.dispatch({"always": True}).on_failure("hook-jobs:failure").on_failure("nowhere:else").send()
    assert ok.wait_result(timeout=15) == {"x": 1}
    assert flaky.wait_result(timeout=15) == "ok"
    with pytest.raises(fastjobs.JobFailed):
        doomed.wait_result(timeout=15)

    def lines() -> list[str]:
        return [b.decode() for b in redis("LRANGE", f"{prefix}:test:stamps", 0, -1)]

    eventually(lambda: sum(line.startswith(("complete", "failure")) for line in lines()) == 3)
    got = lines()
    pid = w.proc.pid
    assert f"complete {ok.id} {{'x': 1}} {pid}" in got
    assert f"complete {flaky.id} 'ok' {pid}" in got
    assert f"retry {flaky.id} attempt=0 0" in got
    assert f"failure {doomed.id} RuntimeError:attempt 1 fails" in got
    # The middleware: each attempt entered; the handler's exception seen on the way out.
    assert got.count(f"enter {flaky.id}") == 2
    assert [x for x in got if x.split()[1] == flaky.id and x.startswith(("raised", "exit"))] == [
        f"raised {flaky.id} RuntimeError", f"exit {flaky.id}"]
    assert got.count(f"raised {doomed.id} RuntimeError") == 2
    assert f"exit {ok.id}" in got
    w.wait_for("no hook named 'nowhere:else'")


# ---- middleware ----


def _recorder(tag: str) -> Any:
    @contextlib.contextmanager
    def mw(job: fastjobs.Job[Any, Any]) -> Iterator[None]:
        SEEN.append((f"{tag}-enter", job.job_id))
        try:
            yield
        except Exception as e:
            SEEN.append((f"{tag}-raised", job.job_id, type(e).__name__))
            raise
        SEEN.append((f"{tag}-exit", job.job_id))

    return mw


def test_middleware_wraps_each_call_and_sees_the_handlers_exception(start_worker: Any) -> None:
    start_worker(queues=["hooks"], jobs=[HookedPlain, HookedSum], middleware=[_recorder("outer"), _recorder("inner")])
    ok = HookedSum.dispatch({"a": 1, "b": 1}).send()
    assert ok.wait_result(timeout=10) == 2
    bad = HookedPlain.dispatch({"fail": True}).send()
    with pytest.raises(fastjobs.JobFailed):
        bad.wait_result(timeout=10)
    eventually(lambda: len([e for e in SEEN if e[0] == "outer-raised"]) == 2 and events("complete"))
    assert [e[0] for e in SEEN if e[1] == ok.id] == ["outer-enter", "inner-enter", "process", "inner-exit", "outer-exit", "complete"]
    assert [e for e in SEEN if e[1] == bad.id] == [
        ("outer-enter", bad.id), ("inner-enter", bad.id), ("inner-raised", bad.id, "RuntimeError"), ("outer-raised", bad.id, "RuntimeError"),
    ] * 2


def test_process_wide_middleware_and_async_middleware(start_worker: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(hooks, "_MIDDLEWARE", [])

    @fastjobs.middleware
    @contextlib.asynccontextmanager
    async def async_mw(job: fastjobs.Job[Any, Any]) -> AsyncIterator[None]:
        SEEN.append(("async-enter", job.job_id))
        await asyncio.sleep(0)
        yield
        SEEN.append(("async-exit", job.job_id))

    fastjobs.middleware(_recorder("plain"))
    start_worker(queues=["hooks-async"], jobs=[HookedPlainAsync])
    h = HookedPlainAsync.dispatch({"result": 3}).send()
    assert h.wait_result(timeout=10) == 3
    eventually(lambda: events("plain-exit"))
    assert [e[0] for e in SEEN] == ["async-enter", "plain-enter", "plain-exit", "async-exit"]


def test_failing_middleware_fails_the_attempt(start_worker: Any) -> None:
    @contextlib.contextmanager
    def refuses(job: fastjobs.Job[Any, Any]) -> Iterator[None]:
        if job.attempt == 0:
            raise ConnectionRefusedError("no database")
        yield

    class HookedAttempt(fastjobs.Job[None, int]):
        queue = "hooks"
        attempts = 2
        backoff = 0

        def process(self, payload: None) -> int:
            SEEN.append(("attempt", self.attempt))
            return self.attempt

    start_worker(queues=["hooks"], jobs=[HookedSum, HookedAttempt], middleware=[refuses])
    assert HookedAttempt.dispatch(None).wait_result(timeout=10) == 1
    assert events("attempt") == [("attempt", 1)]  # the first attempt failed in the middleware: the handler did not run
    one = HookedSum.dispatch({"a": 1, "b": 2}).send()
    with pytest.raises(fastjobs.JobFailed, match="no database") as e:
        one.wait_result(timeout=10)
    assert e.value.exc_type == "ConnectionRefusedError"
    assert not events("process")


def test_middleware_that_is_no_context_manager_fails_the_job(start_worker: Any) -> None:
    start_worker(queues=["hooks"], jobs=[HookedSum], middleware=[lambda job: object()])
    h = HookedSum.dispatch({"a": 1, "b": 2}).send()
    with pytest.raises(fastjobs.JobFailed, match="returned object, not a context manager") as e:
        h.wait_result(timeout=10)
    assert e.value.exc_type == "TypeError"


# ---- bad input ----


def test_bad_hooks_are_refused_at_dispatch() -> None:
    with pytest.raises(TypeError, match=r"tests\.test_hooks:not_registered is not a registered hook: decorate it with @fastjobs\.hook"):
        HookedPlain.dispatch({}).on_complete(not_registered)
    with pytest.raises(TypeError, match=r"on_failure takes a function registered with @fastjobs\.hook"):
        HookedPlain.dispatch({}).on_failure(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a registered hook"):
        HookedPlain.dispatch({}).with_("on_retry", [on_retried, lambda job, e, d: None])
    with pytest.raises(ValueError, match="must not be empty"):
        HookedPlain.dispatch({}).on_complete("")
    with pytest.raises(TypeError, match="not a registered hook"):
        HookedPlain.dispatch_many([{}], on_complete=not_registered)
    with pytest.raises(TypeError, match="middleware takes"):
        fastjobs.middleware(42)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="middleware takes"):
        fastjobs.Worker(["hooks"], middleware=[42])  # type: ignore[list-item]


def test_hook_names_are_unique() -> None:
    def on_failed(job: Any, error: Any) -> None:  # pragma: no cover - refused
        pass

    with pytest.raises(TypeError, match=r"hook name 'tests:on-failed' is taken by tests\.test_hooks:on_failed"):
        fastjobs.hook("tests:on-failed")(on_failed)
    assert fastjobs.registered_hooks()["tests:on-failed"] is globals()["on_failed"]


def test_a_pool_takes_middleware_it_can_import() -> None:
    with pytest.raises(ValueError, match="must be a module-level function of an importable module"):
        fastjobs.Worker(["hooks"], processes=2, middleware=[_recorder("x")])
