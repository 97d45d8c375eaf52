"""Testing code that dispatches jobs, without Redis or a worker.

``fake()`` records every dispatch instead of sending it (Laravel's ``Queue::fake()``), for
assertions on what was dispatched; ``inline()`` runs each dispatched job at once in the calling
process (Celery's eager mode), so a handle's ``wait_result()`` has its result. Both swap the
sending methods of ``PendingDispatch`` and ``Job.dispatch_many`` while the ``with`` block runs
and put them back after: code outside them, and every worker, is untouched and pays nothing.

    with fastjobs.testing.fake() as jobs:
        signup("ada@example.com")
    jobs.assert_dispatched(SendEmail, where=lambda d: d.payload["to"] == "ada@example.com")

Payloads go through the job's checks and JSON as a real dispatch's do (a typed payload is
validated, a bad one raises as it would). Covered: ``.send()``, ``await``, ``send_async()``,
``wait_result()``, ``dispatch_many`` (which returns the handles, a list, under them); chains,
flows, ``BulkDispatcher`` and schedules need a store: ``memory()`` gives the whole of
fastjobs in this process (the ``memory://`` store), and ``drain()`` runs a worker here until
the queues are idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import serde
from .dispatch import JobHandle, PendingDispatch

if TYPE_CHECKING:
    from .job import Job

__all__ = ["Dispatched", "FakeQueue", "drain", "fake", "inline", "memory"]

_ids = itertools.count(1)


@dataclass
class Dispatched:
    """One dispatch a fake saw: the job's class, its payload as a worker would get it (after
    JSON), its queue, options (``delay`` in seconds, ``meta``, ...) and the handle returned."""

    job_class: type[Job[Any, Any]]
    payload: Any
    queue: str
    delay: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    handle: JobHandle[Any] | None = None
    #: After ``inline()`` or ``FakeQueue.run()``: "completed" or "failed", and the result or error.
    state: str = "waiting"
    result: Any = None
    error: BaseException | None = None


class FakeHandle(JobHandle[Any]):
    """The handle a faked dispatch returns: its state and result live in its ``Dispatched``."""

    __slots__ = ("record",)

    def __init__(self, record: Dispatched) -> None:
        super().__init__(f"fake-{next(_ids)}", record.queue, job_class=record.job_class)
        self.record = record

    def status(self) -> str:
        return self.record.state

    async def status_async(self) -> str:
        return self.record.state

    def wait_result(self, timeout: float | None = None) -> Any:
        if self.record.state == "waiting":
            raise RuntimeError(f"job {self.id} ({self.record.job_class.name}) was faked, not run: use fastjobs.testing.inline() "
                               "or FakeQueue.run() to run it")
        if self.record.error is not None:
            raise self.record.error
        return self.record.result

    async def wait_result_async(self, timeout: float | None = None) -> Any:
        return self.wait_result(timeout)


class FakeQueue:
    """What ``fake()`` and ``inline()`` saw, in dispatch order."""

    def __init__(self, run_now: bool) -> None:
        self.run_now = run_now
        self.all: list[Dispatched] = []

    def dispatched(self, job: Any = None) -> list[Dispatched]:
        """The dispatches of ``job`` (a job class or ``@job`` function), or all of them."""
        if job is None:
            return list(self.all)
        cls = getattr(job, "job_class", job)
        return [d for d in self.all if d.job_class is cls]

    def assert_dispatched(self, job: Any, *, count: int | None = None, where: Callable[[Dispatched], bool] | None = None) -> None:
        """Raises ``AssertionError`` unless ``job`` was dispatched (``count`` times, if given),
        at least once matching ``where`` when given."""
        seen = [d for d in self.dispatched(job) if where is None or where(d)]
        name = getattr(job, "name", job)
        if count is None and not seen:
            raise AssertionError(f"{name} was not dispatched{' as asked' if where else ''}; dispatched: {self._names()}")
        if count is not None and len(seen) != count:
            raise AssertionError(f"{name} was dispatched {len(seen)} time(s){' as asked' if where else ''}, not {count}")

    def assert_not_dispatched(self, job: Any) -> None:
        if self.dispatched(job):
            raise AssertionError(f"{getattr(job, 'name', job)} was dispatched {len(self.dispatched(job))} time(s)")

    def assert_nothing_dispatched(self) -> None:
        if self.all:
            raise AssertionError(f"jobs were dispatched: {self._names()}")

    def run(self, job: Any = None) -> list[Any]:
        """Runs the recorded jobs not run yet (of ``job``, or all) in order, in this process, and
        returns their results; a job that raises is recorded as failed and the others still run."""
        out = []
        for d in self.dispatched(job):
            if d.state == "waiting":
                _run(d)
            out.append(d.result)
        return out

    def _names(self) -> list[str]:
        return [d.job_class.name for d in self.all] or ["nothing"]

    def _record(self, pending: PendingDispatch[Any], run: bool = True) -> Dispatched:
        pending._claim()
        cls = pending.job_class
        opts = pending._options_json()
        record = Dispatched(cls, serde.loads(cls._dump_payload(pending.payload)), pending._queue, pending._delay,
                            serde.loads(opts) if opts else {})
        record.handle = FakeHandle(record)
        self.all.append(record)
        if self.run_now and run:
            _run(record)
        return record


def _run(d: Dispatched) -> None:
    try:
        result = d.job_class.dispatch_now(d.payload)
        if asyncio.iscoroutine(result):  # an async job, dispatched by .send() inside a running loop
            result.close()
            raise RuntimeError(f"{d.job_class.name} is async: inside a running event loop, dispatch it with await")
        d.state, d.result = "completed", result
    except Exception as e:  # noqa: BLE001 - recorded as the job's failure, as a worker would
        d.state, d.error = "failed", e


async def _run_async(d: Dispatched) -> None:
    try:
        d.state, d.result = "completed", await d.job_class.dispatch_now(d.payload)
    except Exception as e:  # noqa: BLE001
        d.state, d.error = "failed", e


@contextlib.contextmanager
def _patched(fq: FakeQueue) -> Iterator[FakeQueue]:
    from .job import Job

    def send(self: PendingDispatch[Any], *, conn: Any = None) -> JobHandle[Any]:
        # conn= (a PostgreSQL transaction) is not joined: the fake queue records the dispatch.
        handle = fq._record(self).handle
        assert handle is not None
        return handle

    async def send_async(self: PendingDispatch[Any], *, conn: Any = None) -> JobHandle[Any]:
        awaited = fq.run_now and self.job_class._is_async  # an async job runs on this loop
        record = fq._record(self, run=not awaited)
        if awaited:
            await _run_async(record)
        assert record.handle is not None
        return record.handle

    def dispatch_many(cls: type[Job[Any, Any]], /, payloads: Iterable[Any], **options: Any) -> Any:
        handles = []
        for p in payloads:
            pending = cls.dispatch(p)
            for name, value in options.items():
                if name not in ("chunk_size", "progress"):
                    pending.with_(name, value)
            handles.append(send(pending))
        return handles

    async def dispatch_many_async(cls: type[Job[Any, Any]], /, payloads: Iterable[Any], **options: Any) -> Any:
        return dispatch_many(cls, payloads, **options)

    saved = (PendingDispatch.send, PendingDispatch.send_async, Job.__dict__["dispatch_many"], Job.__dict__["dispatch_many_async"])
    PendingDispatch.send = send  # type: ignore[method-assign]
    PendingDispatch.send_async = send_async  # type: ignore[method-assign]
    Job.dispatch_many = classmethod(dispatch_many)  # type: ignore[assignment,method-assign]
    Job.dispatch_many_async = classmethod(dispatch_many_async)  # type: ignore[assignment,method-assign]
    try:
        yield fq
    finally:
        PendingDispatch.send, PendingDispatch.send_async = saved[0], saved[1]  # type: ignore[method-assign]
        Job.dispatch_many, Job.dispatch_many_async = saved[2], saved[3]  # type: ignore[method-assign]


def fake() -> contextlib.AbstractContextManager[FakeQueue]:
    """Records dispatches instead of sending them, for the ``with`` block: nothing reaches
    Redis and nothing runs (``FakeQueue.run()`` runs them when you want)."""
    return _patched(FakeQueue(run_now=False))


def inline() -> contextlib.AbstractContextManager[FakeQueue]:
    """Runs each dispatched job at once, in this process, for the ``with`` block: its handle's
    ``wait_result()`` returns the result (or raises the job's error)."""
    return _patched(FakeQueue(run_now=True))


@contextlib.contextmanager
def memory(connection: str = "default") -> Iterator[str]:
    """Points ``connection`` at a fresh in-process store (``memory://<fresh name>``) for the
    ``with`` block, and back at what it was after. Everything works on it (workers in this
    process, chains, flows, schedules, bulk dispatch, the queue controls); nothing leaves the
    process. Yields the store's URL."""
    from . import config

    url = f"memory://t{uuid.uuid4().hex[:16]}"
    before = config.configured().get(connection)
    config.configure(url, connection=connection)
    try:
        yield url
    finally:
        config.forget(connection, before)


def drain(*queues: str, timeout: float = 30.0, delayed: bool = True, connection: str = "default", **worker: Any) -> Any:
    """Runs a worker on ``queues`` (default: ``"default"``) in a thread of this process until
    none of them has a job waiting, running or (with ``delayed``, the default) delayed, such
    as a retry waiting out its backoff; then stops it and returns its ``WorkerSummary``.
    Raises ``TimeoutError`` after ``timeout`` seconds. ``delayed=False`` leaves delayed jobs
    (ones due much later). ``worker`` passes options to ``Worker``. Made for the
    ``memory://`` store (``memory()``), and works on any."""
    from .queue import Queue
    from .worker import Worker

    names = list(queues) or ["default"]
    w = Worker(queues=names, connection=connection, **worker)
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(w.run(install_signals=False)), daemon=True)
    thread.start()
    qs = [Queue(n, connection=connection) for n in names]
    deadline = time.monotonic() + timeout
    try:
        while True:
            counts = [q.counts() for q in qs]
            if all(c["waiting"] == 0 and c["active"] == 0 and (c["delayed"] == 0 or not delayed) for c in counts):
                break
            if time.monotonic() > deadline or not thread.is_alive():
                raise TimeoutError(f"queues {names} still had jobs after {timeout} seconds: {counts}")
            time.sleep(0.005)
    finally:
        w.stop()
        thread.join(timeout)
    return out[0] if out else None
