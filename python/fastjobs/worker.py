"""The worker process: Python threads run sync handlers, one asyncio loop runs async ones;
the Rust engine fetches, acknowledges, renews leases and runs the scheduler.

Shutdown: the first SIGTERM/SIGINT stops fetching, hands prefetched jobs back to the head of
their queues at once, and lets running jobs finish within ``grace`` seconds (jobs still
running then are handed back too). A second signal exits at once; the leases then expire
and the jobs are reaped back to their queues by any other worker's scheduler.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from . import _core, config, hooks, serde, tracing
from . import chain as chains
from . import flow as flows
from ._eager import start_eagerly
from .errors import JobCancelled, JobTimeoutError
from .job import Job, registry
from .options import backoff_from_json, check_seconds
from .worker_registry import DEFAULT_INTERVAL, Registration

if TYPE_CHECKING:
    from .pool import Pool

#: How often a pool child reports its counts to its parent (pool.py): a child that dies
#: loses at most this much of its counts from the pool's summary.
REPORT_EVERY = 0.1
#: The longest a stopping worker waits for callbacks still being tried (less if ``grace`` is).
CALLBACK_WAIT = 10.0

__all__ = ["Worker", "WorkerSummary"]

log = logging.getLogger("fastjobs.worker")

# The tuple fields of a job handed over by the engine (see WorkerEngine.next_jobs).
_HANDLE, _QUEUE, _ID, _NAME, _ATTEMPT, _MAX, _ENQUEUED, _PAYLOAD, _OPTIONS, _REDELIVERED = range(10)


def _in_workflow(opts: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """A job of a JobChain or JobFlow: its options carry its place there."""
    return opts is not None and ("chain" in opts or "flow" in opts)


def _about(job: tuple[Any, ...]) -> dict[str, Any]:
    """The ``extra=`` of a log record about a job: fields of its JSON line (jsonlog.py)."""
    return {"job_id": job[_ID], "job_name": job[_NAME], "queue": job[_QUEUE]}


def _log_redelivered(job_id: str, name: str, queue: str) -> None:
    # Before the handler runs: if it kills this worker too, the line is out already.
    log.warning("job %s runs again: the worker that held it died while it may have been running it", job_id,
                extra={"job_id": job_id, "job_name": name, "queue": queue})


@dataclass
class WorkerSummary:
    """What a worker did, as Redis took it: ``completed``, ``retried`` and ``failed`` count the
    outcomes Redis accepted; ``stale`` the outcomes it refused because the job's lease had
    expired while this worker ran it (the worker was frozen or cut off past its lease, so the
    job went to another worker, which runs it again: this run was a duplicate);
    ``handed_back`` the jobs it gave back to their queues (unstarted ones when it stopped, and
    running ones when the grace period ran out); ``cancelled`` the jobs it ended as cancelled
    (asked to, and given up by their handler, or not started yet)."""

    completed: int
    retried: int
    failed: int
    handed_back: int
    seconds: float
    stale: int = 0
    cancelled: int = 0
    #: A pool (``processes=``): its children replaced, by why ("killed by SIGKILL",
    #: "recycled after 1000 jobs", ...); the counts above are summed over every child.
    restarts: dict[str, int] = field(default_factory=dict)


def _timeout_message(job_id: str, name: str, timeout: float) -> str:
    return f"job {job_id} ({name}) ran past its timeout of {float(timeout)} s"


def _timeout_error(message: str) -> type[JobTimeoutError]:
    """A ``JobTimeoutError`` whose instances say ``message``: ``PyThreadState_SetAsyncExc``
    raises a class, instantiated with no arguments, so the message travels in the class
    (made when the watchdog fires, not per job). It shows, pickles and is recorded as
    ``fastjobs.errors.JobTimeoutError``."""

    class Armed(JobTimeoutError):
        def __init__(self, *args: object) -> None:
            super().__init__(*(args or (message,)))

        def __reduce__(self) -> Any:
            return (JobTimeoutError, self.args)

    Armed.__name__ = Armed.__qualname__ = JobTimeoutError.__qualname__
    Armed.__module__ = JobTimeoutError.__module__
    return Armed


class _Watchdog:
    """Raises ``JobTimeoutError`` inside a sync handler's thread when its time is up (at the
    handler's next Python instruction; a blocking C call finishes first)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, str, str, float]] = []
        self._live: set[int] = set()
        self._cv = threading.Condition()
        self._ids = itertools.count()
        threading.Thread(target=self._run, name="fastjobs-watchdog", daemon=True).start()

    def arm(self, seconds: float, job_id: str, name: str) -> int:
        token = next(self._ids)
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, threading.get_ident(), job_id, name, seconds))
            self._live.add(token)
            self._cv.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cv:
            self._live.discard(token)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline, token, thread_id, job_id, name, seconds = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cv.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                if token in self._live:
                    self._live.discard(token)
                    error = _timeout_error(_timeout_message(job_id, name, seconds))
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(error))


class Worker:
    """Runs registered jobs from ``queues``: a list is consumed in strict order (a queue is
    read only when the ones before it have nothing ready); a dict ``{name: weight}`` in a
    weighted order (each reserve round draws the order at random by weight, so a queue of
    weight 3 comes first three times as often as one of weight 1, and none is starved).

    ``concurrency`` is the number of handler threads (sync jobs) and the number of jobs the
    asyncio loop runs at once (async jobs). ``prefetch`` is how many reserved jobs are kept
    ready for the handlers: by default it adapts to the completion rate (about 50 ms of work,
    at most max(8000, 4 x concurrency)); a number fixes it. ``lease`` is how long a job stays reserved without
    a heartbeat (heartbeats renew it every ``lease/3``); ``grace`` how long a graceful stop
    waits for running jobs.

    ``processes`` runs a pool of that many worker processes (``"auto"``: one per usable
    core), each with ``concurrency`` handler threads, supervised by this process (``pool.py``):
    children that die are replaced, ``max_jobs_per_child`` and ``max_memory_per_child`` (MB)
    recycle them, ``reload`` replaces them when a ``.py`` file under the job modules'
    directories changes. ``start_method`` is ``"fork"`` (the default on Linux) or ``"spawn"``.

    Jobs dispatched with ``.callback(url)`` or ``.failure_callback(url)`` have their outcome
    posted by the worker (README "Callbacks"): signed with ``callback_secret`` (str or bytes;
    default ``$FASTJOBS_CALLBACK_SECRET``; without one they go unsigned, with a warning),
    tried ``callback_attempts`` times, the first wait ``callback_backoff`` seconds and doubled
    after each failed try. A stop waits up to ``min(grace, 10)`` seconds for callbacks still
    being tried.

    The worker keeps an entry in the worker registry (``fastjobs.workers()``, the ``fastjobs
    workers`` command), rewritten every ``registry_interval`` seconds and deleted when it stops.
    """

    def __init__(
        self,
        queues: Sequence[str] | Mapping[str, int] = ("default",),
        *,
        concurrency: int = 1,
        connection: str = "default",
        prefetch: int | None = None,
        lease: float = 30.0,
        grace: float = 30.0,
        scheduler: bool = True,
        jobs: Iterable[type[Job[Any, Any]]] | None = None,
        processes: int | str | None = None,
        max_jobs_per_child: int | None = None,
        max_memory_per_child: float | None = None,
        start_method: str | None = None,
        reload: bool = False,
        middleware: Iterable[Callable[[Any], Any]] = (),
        callback_secret: str | bytes | None = None,
        callback_attempts: int = 5,
        callback_backoff: float = 4.0,
        metrics_port: int | None = None,
        registry_interval: float = DEFAULT_INTERVAL,
        _worker_id: str | None = None,
        _max_jobs: int | None = None,
        _metrics: str | None = None,
    ) -> None:
        weights: list[int] | None = None
        if isinstance(queues, str):
            queues = [queues]
        elif isinstance(queues, Mapping):
            for name, w in queues.items():
                if isinstance(w, bool) or not isinstance(w, int) or w < 1 or w > 1_000_000:
                    raise ValueError(f"the weight of queue {name!r} must be an int from 1 to 1,000,000, got {w!r}")
            weights = list(queues.values())
            queues = list(queues)
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        lease = check_seconds(lease, "lease", minimum=0.3)
        grace = check_seconds(grace, "grace")
        registry_interval = check_seconds(registry_interval, "registry_interval", minimum=0.1)
        secret, callback_attempts, callback_backoff = _callback_settings(callback_secret, callback_attempts, callback_backoff)
        if metrics_port is not None:
            from .metrics import check_port

            metrics_port = check_port(metrics_port)
        self.metrics_port = metrics_port
        self.queues = list(queues)
        self.connection = connection
        self.concurrency = concurrency
        self.grace = grace
        self.scheduler = scheduler
        self.jobs = {j.name: j for j in jobs} if jobs is not None else registry()
        self.client = config.client(connection)
        own = hooks.check_middleware(middleware)
        self._pool: Pool | None = None
        self._connection_checked = False
        if processes is not None or reload:
            spec = dict(queues=dict(zip(self.queues, weights)) if weights else self.queues, concurrency=concurrency,
                        connection=connection, prefetch=prefetch, lease=lease, grace=grace, scheduler=scheduler,
                        jobs=None if jobs is None else list(self.jobs), middleware=hooks.middleware_names(own),
                        callback_attempts=callback_attempts, callback_backoff=callback_backoff,
                        callback_secret=None if secret is None else secret.hex(), metrics_port=metrics_port,
                        registry_interval=registry_interval)
            self._pool = _pool(spec, self.jobs, processes, max_jobs_per_child, max_memory_per_child, start_method, grace, reload)
            return
        if max_jobs_per_child is not None or max_memory_per_child is not None:
            raise ValueError("max_jobs_per_child and max_memory_per_child recycle the children of a pool: give processes too")
        self.engine = _core.WorkerEngine(
            self.client,
            self.queues,
            prefetch=prefetch,
            concurrency=concurrency,
            lease=lease,
            weights=weights,
            worker_id=_worker_id,
            max_jobs=_max_jobs,
            callback_secret=secret,
            callback_attempts=callback_attempts,
            callback_backoff=callback_backoff,
        )
        self._stop = threading.Event()
        self._stopping = False  # mirrors _stop, read once per job on the hot path
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._loop_thread: threading.Thread | None = None
        self._async_slots = threading.BoundedSemaphore(concurrency)
        self._async_tasks: set[asyncio.Task[Any]] = set()
        self._async_running = 0  # touched on the loop thread only
        self._async_free: asyncio.Future[None] | None = None
        self._async_only = False
        self._mixed = False  # sync and async jobs registered: pullers hand async ones over in batches
        self._async_puller: Any | None = None
        self._watchdog: _Watchdog | None = None
        self._async_done: list[int] = []  # completed with None, reported once per loop pass
        self._async_by_handle: dict[int, asyncio.Task[Any]] = {}  # running async jobs, for cancels
        self._cancels: threading.Thread | None = None
        self._signals = 0
        self._on_tick: Callable[[], None] | None = None  # a pool child's reporter (pool.py)
        self._registry_interval = registry_interval
        self._pool_parent: int | None = None  # the pid of the pool that runs this worker (pool.py)
        self._registration: Registration | None = None
        self._own_middleware = own
        #: Every middleware, the process's then this worker's, taken when the worker starts.
        self._middleware = hooks.snapshot(own)
        # Metrics (metrics.py): "serve" (metrics_port), "sample" (a pool's child #1: records and
        # reads the queues' depths), "record" (another child), or None (off: nothing wrapped).
        self._metrics_mode = "serve" if metrics_port is not None else _metrics
        self._recorder: Any = None
        self._fates: dict[int, str | None] | None = None  # handle -> outcome other than completed
        self._traced = False  # tracing on when it started (tracing.py): jobs run in spans
        if self._metrics_mode is not None:
            from .metrics import Recorder, instrument

            self._recorder = Recorder()
            self._fates = self._recorder.fates
            instrument(self, self._recorder)

    # ---- running one job ----

    def _outcome_failed(self, job: tuple[Any, ...], cls: type[Job[Any, Any]] | None, exc: BaseException,
                        opts: dict[str, Any] | None) -> tuple[str, tuple[Any, ...]] | None:
        """Settles a failed attempt: retried, failed for good or cancelled. Returns the hooks'
        outcome and arguments (``("retry", (exc, delay))``, ``("failure", (exc,))``), or None
        when no hook follows (cancelled, handed back)."""
        engine = self.engine
        made = job[_ATTEMPT] + 1
        if self._traced:
            tracing.failed(exc)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}" if type(exc).__module__ != "builtins" else type(exc).__qualname__
        if isinstance(exc, (JobCancelled, asyncio.CancelledError)) or engine.is_cancelled(job[_HANDLE]):
            self._cancelled(job, opts, str(exc) or "cancelled while it ran")
            return None
        if cls is not None and made < job[_MAX]:
            spec = (opts or {}).get("backoff")
            try:
                delay = cls.retry_delay(made, backoff_from_json(spec) if spec else None)
            except (TypeError, ValueError, KeyError) as e:  # a backoff option fastjobs did not write
                log.error("job %s: its backoff option cannot be read (%s); the class's backoff applies", job[_ID], e,
                          extra=_about(job))
                delay = cls.retry_delay(made)
            engine.retry(job[_HANDLE], delay, kind, str(exc), tb)
            if self._fates is not None:
                self._fates[job[_HANDLE]] = "retried"
            log.info("job %s (%s) failed attempt %d/%d, retrying in %.3fs: %r", job[_ID], job[_NAME], made, job[_MAX], delay, exc,
                     extra=_about(job))
            return "retry", (exc, delay)
        else:
            if _in_workflow(opts):
                try:
                    self._workflow_failed(opts, job[_ID], job[_NAME], {"type": kind, "message": str(exc), "traceback": tb})
                except Exception as e:  # noqa: BLE001 - the workflow must hear of it: the job runs again later
                    log.error("job %s: could not tell its workflow it failed (%s); handing it back to run again", job[_ID], e,
                              extra=_about(job))
                    engine.release_handles([job[_HANDLE]])
                    if self._fates is not None:
                        self._fates[job[_HANDLE]] = None
                    return None
            engine.fail(job[_HANDLE], kind, str(exc), tb)
            if self._fates is not None:
                self._fates[job[_HANDLE]] = "failed"
            log.warning("job %s (%s) failed for good after %d attempt(s): %r", job[_ID], job[_NAME], made, exc, extra=_about(job))
            return "failure", (exc,)

    def _cancelled(self, job: tuple[Any, ...], opts: dict[str, Any] | None, message: str) -> None:
        """The job gave up after it was asked to cancel (or raised ``JobCancelled``): it ends
        as cancelled, not retried; a chain step or flow node first tells its workflow, which
        follows its failure policy."""
        if _in_workflow(opts):
            try:
                self._workflow_failed(opts, job[_ID], job[_NAME], {"type": "fastjobs.errors.JobCancelled", "message": message, "traceback": ""})
            except Exception as e:  # noqa: BLE001 - the workflow must hear of it: the job runs again later
                log.error("job %s: could not tell its workflow it was cancelled (%s); handing it back", job[_ID], e, extra=_about(job))
                self.engine.release_handles([job[_HANDLE]])
                if self._fates is not None:
                    self._fates[job[_HANDLE]] = None
                return
        self.engine.cancel(job[_HANDLE])
        if self._fates is not None:
            self._fates[job[_HANDLE]] = "cancelled"
        log.info("job %s (%s) cancelled: %s", job[_ID], job[_NAME], message, extra=_about(job))

    # ---- workflows: a job of a JobChain or JobFlow (its options say which) ----

    def _enter_workflow(self, inst: Job[Any, Any], opts: dict[str, Any]) -> None:
        chain = opts.get("chain")
        if chain is not None:
            inst.__dict__.update(previous_result=chains.previous_result(self.client, chain), chain_failure=chains.failure_of(chain))
        if "flow" in opts:
            inst.__dict__["_flow"] = (self.client, opts["flow"])

    def _settle_flows(self, settle: list[tuple[int, Any, bytes | None]]) -> bool:
        """Settles a batch's flow children in one round trip, then acknowledges them; if Redis
        refuses, they are handed back and run again (settling is idempotent): False."""
        try:
            flows.settle_many(self.client, [f for _h, f, _d in settle])
        except Exception as e:  # noqa: BLE001
            log.error("could not settle %d flow job(s) (%s); handing them back to run again", len(settle), e)
            self.engine.release_handles([h for h, _f, _d in settle])
            if self._fates is not None:
                self._fates.update((h, None) for h, _f, _d in settle)
            return False
        for handle, _f, data in settle:
            self.engine.complete(handle, data)
        return True

    def _workflow_done(self, opts: dict[str, Any], job_id: str, name: str, data: bytes | None) -> None:
        """Before the job's acknowledgement (see chain.py and flow.py)."""
        if "chain" in opts:
            chains.step_completed(self.client, opts["chain"], data)
        if "flow" in opts:
            flows.node_completed(self.client, opts["flow"], job_id, name, data)

    def _workflow_failed(self, opts: dict[str, Any], job_id: str, name: str, error: dict[str, Any]) -> None:
        if "chain" in opts:
            chains.step_failed(self.client, opts["chain"], job_id, name, error)
        if "flow" in opts:
            flows.node_failed(self.client, opts["flow"], job_id, name, error)

    def _options(self, job: tuple[Any, ...]) -> tuple[bool, dict[str, Any] | None]:
        """The job's per-dispatch options, and whether they could be read: options that are not
        a JSON object (written by something other than fastjobs) fail the job here, with a
        DecodeError, before a handler thread could trip over them."""
        raw = job[_OPTIONS]
        if raw is None:
            return True, None
        try:
            opts = serde.loads(raw)
        except ValueError:
            opts = None
        if isinstance(opts, dict):
            return True, opts
        self.engine.fail(job[_HANDLE], "DecodeError",
                         f"the options of job {job[_ID]} on queue {job[_QUEUE]!r} are not a JSON object ({len(raw)} bytes)")
        log.error("job %s: its options are not a JSON object; failed", job[_ID], extra=_about(job))
        if self._fates is not None:
            self._fates[job[_HANDLE]] = "failed"
        return False, None

    def _unknown(self, job: tuple[Any, ...]) -> None:
        self.engine.fail(job[_HANDLE], "UnknownJob", f"no job named {job[_NAME]!r} is registered in this worker (workers run registered jobs only)")
        log.error("job %s names %r, which no module loaded by this worker registers", job[_ID], job[_NAME], extra=_about(job))
        if self._fates is not None:
            self._fates[job[_HANDLE]] = "failed"

    def _run_sync(self, jobs: list[tuple[Any, ...]]) -> None:
        """Runs a batch in this thread. The hot path: per job one dict lookup, one JSON
        decode (the class's ``_load_payload``: ``serde.loads`` unless it declares a payload
        type), the handler call; `None` results are reported once for the whole batch."""
        engine, registered, mw = self.engine, self.jobs, self._middleware
        wrapped = bool(mw)
        finished: list[int] = []
        settle: list[tuple[int, Any, bytes | None]] = []  # flow children, settled together
        try:
            for i, job in enumerate(jobs):
                if self._stopping:
                    engine.release_handles([j[_HANDLE] for j in jobs[i:]])
                    break
                handle, queue, job_id, name, attempt, _max, _enq, payload, raw_opts, redelivered = job
                cls = registered.get(name)
                if cls is None:
                    self._unknown(job)
                    continue
                if cls._is_async:
                    self._submit_async([job])
                    continue
                # Hooks or middleware: one flag per job, read where they act (hooks.py).
                if raw_opts is None:
                    opts = None
                    hooked = cls._hooked or wrapped
                else:
                    readable, opts = self._options(job)
                    if not readable:
                        continue
                    hooked = cls._hooked or wrapped or "hooks" in opts  # type: ignore[operator]
                guard = None
                inst: Job[Any, Any] | None = None
                try:
                    timeout = cls._timeout if opts is None else opts.get("timeout", cls._timeout)
                    if timeout is not None and self._watchdog:
                        guard = self._watchdog.arm(timeout, job_id, name)
                    inst = cls.__new__(cls)
                    inst.__dict__.update(job_id=job_id, attempt=attempt, queue_name=queue,
                                         meta={} if opts is None else (opts.get("meta") or {}), _run=(engine, handle))
                    if opts is not None and "group" in opts:
                        inst.__dict__["group"] = opts["group"]
                    if redelivered:
                        inst.__dict__["redelivered"] = True
                        _log_redelivered(job_id, cls.name, queue)
                    flowing = opts is not None and ("chain" in opts or "flow" in opts)  # _in_workflow, inlined: hot path
                    if flowing:
                        self._enter_workflow(inst, opts)  # type: ignore[arg-type]
                    if hooked:
                        result = hooks.call_wrapped(mw, inst, cls._load_payload(payload)) if mw else inst.process(cls._load_payload(payload))
                    else:
                        result = inst.process(cls._load_payload(payload))  # serde.loads, or a typed payload's load
                    if guard is not None:
                        self._watchdog.disarm(guard)  # type: ignore[union-attr]
                        guard = None
                    if flowing:
                        data = None if result is None else cls._dump_result(result, "result")
                        if "flow" in opts and "chain" not in opts:  # type: ignore[operator]
                            settling = (handle, flows.completed(opts["flow"], job_id, name, data), data)  # type: ignore[index]
                            if not hooked:
                                settle.append(settling)
                            elif not self._settle_flows([settling]):  # at once: its hooks follow the outcome
                                continue
                        else:
                            self._workflow_done(opts, job_id, name, data)  # type: ignore[arg-type]
                            engine.complete(handle, data)
                    elif hooked:
                        # Handed to the engine before its hooks run (not left for the batch's end).
                        engine.complete(handle, None if result is None else cls._dump_result(result, "result"))
                    elif result is None:
                        finished.append(handle)
                    else:
                        engine.complete(handle, cls._dump_result(result, "result"))
                except BaseException as exc:  # noqa: BLE001 - a handler's error of any kind fails the job
                    if guard is not None:
                        self._watchdog.disarm(guard)  # type: ignore[union-attr]
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        engine.release_handles([handle])
                        raise
                    event = self._outcome_failed(job, cls, exc, opts)
                    if hooked and event is not None and inst is not None:
                        hooks.run_hooks(inst, opts, event[0], event[1], self._ensure_loop)
                    continue
                if hooked:
                    hooks.run_hooks(inst, opts, "complete", (result,), self._ensure_loop)
        finally:
            if settle:
                self._settle_flows(settle)
            if finished:
                engine.complete_many(finished)

    # ---- async jobs: one event loop in its own thread ----
    #
    # A worker whose jobs are all async pulls batches on the loop itself (`_async_pull`);
    # otherwise the sync pullers hand async jobs over in batches. Either way each job runs in a
    # Task of its own (started eagerly on Python 3.12+, `_eager.py`), at most `concurrency` at once.

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        # Several puller threads may meet their first async job at once: one loop for all.
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=loop.run_forever, name="fastjobs-asyncio", daemon=True)
                self._loop_thread.start()
                self._loop = loop
            return self._loop

    def _submit_async(self, jobs: list[tuple[Any, ...]]) -> None:
        """From a sync puller thread: waits for free slots, then hands the jobs over at once."""
        for _ in jobs:
            self._async_slots.acquire()
        self._ensure_loop().call_soon_threadsafe(self._launch_all, jobs)

    def _hand_async(self, jobs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Hands a batch's async jobs to the loop, as many together as there are free slots
        (one wake-up of the loop, not one per job), and returns the others for this thread to
        run. Slots taken are handed over before waiting for another: several pullers each
        holding some while waiting for more would wait for ever."""
        if self._stopping:
            return jobs  # _run_sync hands them all back
        registered, slots = self.jobs, self._async_slots
        rest: list[tuple[Any, ...]] = []
        ready: list[tuple[Any, ...]] = []
        for job in jobs:
            cls = registered.get(job[_NAME])
            if cls is None or not cls._is_async:
                rest.append(job)
                continue
            if not slots.acquire(blocking=False):
                if ready:
                    self._ensure_loop().call_soon_threadsafe(self._launch_all, ready)
                    ready = []
                slots.acquire()
            ready.append(job)
        if ready:
            self._ensure_loop().call_soon_threadsafe(self._launch_all, ready)
        return rest

    def _launch_all(self, jobs: list[tuple[Any, ...]]) -> None:
        loop = asyncio.get_running_loop()
        for job in jobs:
            self._async_running += 1
            task = start_eagerly(loop, self._run_async(job), self._async_finished)
            if task is not None and not task.done():
                self._async_tasks.add(task)
                self._async_by_handle[job[_HANDLE]] = task

    def _async_finished(self, task: asyncio.Task[Any]) -> None:
        # _run_async settles every outcome itself; a Task ends in error only when cancelled
        # at shutdown, or on a BaseException it let through (then reported here, once).
        self._async_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("async job task failed", exc_info=task.exception())
        self._async_running -= 1
        if self._async_only:
            if self._async_free is not None and not self._async_free.done():
                self._async_free.set_result(None)
        else:
            self._async_slots.release()

    def _report_async_done(self) -> None:
        done, self._async_done = self._async_done, []
        if done:
            self.engine.complete_many(done)

    async def _async_pull(self) -> None:
        loop = asyncio.get_running_loop()
        engine = self.engine
        with ThreadPoolExecutor(1, thread_name_prefix="fastjobs-pull") as pull:
            while not self._stopping:
                free = self.concurrency - self._async_running
                if free <= 0:
                    self._async_free = loop.create_future()
                    await self._async_free
                    continue
                # What is buffered, at once on the loop (no thread hop while busy); the
                # blocking wait for more runs on the pull thread.
                jobs = engine.next_jobs(min(free, 512), 0.0)
                if not jobs:
                    if engine.exhausted():  # a pool child's job quota is used up: it is recycled
                        self.stop()
                        break
                    jobs = await loop.run_in_executor(pull, engine.next_jobs, min(free, 512), 0.25)
                if self._stopping:
                    if jobs:
                        await loop.run_in_executor(pull, engine.release_handles, [j[_HANDLE] for j in jobs])
                    break
                self._launch_all(jobs)

    async def _run_async(self, job: tuple[Any, ...]) -> None:
        handle, queue, job_id, name, attempt, _max, _enq, payload, _raw_opts, redelivered = job
        cls = self.jobs.get(name)
        if cls is None:
            self._unknown(job)
            return
        readable, opts = self._options(job)
        if not readable:
            return
        mw = self._middleware
        hooked = cls._hooked or bool(mw) or (opts is not None and "hooks" in opts)  # one flag per job (hooks.py)
        inst: Job[Any, Any] | None = None
        event: tuple[str, tuple[Any, ...]] | None = None
        try:
            inst = cls._instance(job_id, attempt, queue, {} if opts is None else (opts.get("meta") or {}), redelivered)
            inst.__dict__["_run"] = (self.engine, handle)
            if opts is not None and "group" in opts:
                inst.__dict__["group"] = opts["group"]
            if redelivered:
                _log_redelivered(job_id, cls.name, queue)
            flowing = opts is not None and ("chain" in opts or "flow" in opts)  # _in_workflow, inlined: hot path
            if flowing:  # a few round trips on the loop, for workflow jobs only
                self._enter_workflow(inst, opts)  # type: ignore[arg-type]
            data_in = cls._load_payload(payload)  # serde.loads, or a typed payload's load
            coro: Any = hooks.call_wrapped_async(mw, inst, data_in) if hooked and mw else inst.process(data_in)
            timeout = cls._timeout if opts is None else opts.get("timeout", cls._timeout)
            if timeout is not None:
                loop = asyncio.get_running_loop()
                started = loop.time()
                try:
                    result = await asyncio.wait_for(coro, timeout)
                except asyncio.TimeoutError:
                    if loop.time() - started < timeout:
                        raise  # the handler's own TimeoutError, within its time
                    raise JobTimeoutError(_timeout_message(job_id, name, timeout)) from None
            else:
                result = await coro
            data = None if result is None else cls._dump_result(result, "result")
            if flowing:
                self._workflow_done(opts, job_id, name, data)  # type: ignore[arg-type]
            if data is None and not hooked:
                # Reported with the others that finish in this pass of the loop: one call
                # into the engine and one ack entry list, as the sync path does per batch.
                if not self._async_done:
                    asyncio.get_running_loop().call_soon(self._report_async_done)
                self._async_done.append(handle)
            else:
                self.engine.complete(handle, data)  # a hooked job's, at once: its hooks follow the outcome
            if hooked:
                event = "complete", (result,)
        except asyncio.CancelledError as exc:
            if not self.engine.is_cancelled(handle):  # cancelled by a stop, not by its job's cancel
                self.engine.release_handles([handle])
                raise
            self._outcome_failed(job, cls, exc, opts)  # cancelled: no hook follows
        except Exception as exc:  # noqa: BLE001
            event = self._outcome_failed(job, cls, exc, opts)
        finally:
            self._async_by_handle.pop(handle, None)
        if hooked and event is not None and inst is not None:
            await hooks.run_hooks_async(inst, opts, *event)

    # ---- the pullers ----

    def _puller(self) -> None:
        engine = self.engine
        batch = 1
        try:
            while not self._stop.is_set():
                jobs = engine.next_jobs(batch, 0.25)
                if not jobs:
                    if engine.exhausted():  # a pool child's job quota is used up: it is recycled
                        self.stop()
                    continue
                started = time.perf_counter()
                rest = self._hand_async(jobs) if self._mixed else jobs
                if rest:
                    self._run_sync(rest)
                # Size the next batch to ~5 ms of work: large for quick jobs, 1 for slow ones.
                per_job = (time.perf_counter() - started) / len(jobs)
                batch = max(1, min(512, int(0.005 / per_job) if per_job > 0 else 512))
        except BaseException:  # pragma: no cover - reported, then the worker stops
            log.exception("worker thread crashed")
            self.stop()

    def _listen_cancels(self) -> None:
        """Cancels the asyncio task of an async job somebody cancelled (a sync handler reads
        ``self.cancelled`` itself). The engine wakes this thread; it does not poll Redis."""
        while not self._stopping:
            for handle in self.engine.next_cancels(0.5):
                task = self._async_by_handle.get(handle)
                if task is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(task.cancel)

    # ---- lifecycle ----

    def stop(self) -> None:
        """Asks for a graceful stop (thread-safe); ``run`` returns once it is done."""
        if self._pool is not None:
            self._pool.stop()
            return
        self._stopping = True
        self._stop.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting now; leases will expire and the jobs go back to their queues")
            os._exit(130)
        log.info("signal %d: stopping (press Ctrl-C again to exit at once)", signum)
        self.stop()

    def _register_periodic(self) -> None:
        from .schedule import sync_declared

        try:
            n = sync_declared(self.queues, self.jobs, self.connection)
        except Exception as e:  # noqa: BLE001 - Redis may be down at start; the worker retries it anyway
            log.error("could not register the periodic jobs declared in code: %s", e)
            return
        if n:
            log.info("registered %d periodic schedule(s) declared in code", n)

    def _check_connection(self) -> None:
        """Before the start: settings that can never work raise (``AuthenticationError``;
        ``StoreError`` for a database index the server does not have; ``ConnectionError`` for
        a host name that does not exist). A Redis that cannot be reached now (refused, timed
        out) is logged, and the worker starts and retries: Redis may be starting up."""
        if self._pool is not None:
            from .pool import check_connection

            trouble = check_connection(self.connection, self._pool.start_method)
        else:
            trouble = self.client.check_connection()
        if trouble:
            log.warning("%s cannot be reached yet; starting anyway, retrying until it can: %s", config.store_name(self.client.url), trouble)
        self._connection_checked = True

    def run(self, *, install_signals: bool = True) -> WorkerSummary:
        """Runs until ``stop()`` or a signal; returns what was done. Raises before it starts
        when the connection settings can never work (see ``_check_connection``)."""
        if self._pool is not None:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("a worker pool runs in the main thread: it supervises its children by signals")
            if not self._connection_checked:
                self._check_connection()
            totals = self._pool.run()
            return WorkerSummary(totals.get("completed", 0), totals.get("retried", 0), totals.get("failed", 0),
                                 totals.get("handed_back", 0), totals["seconds"], totals.get("stale", 0),
                                 totals.get("cancelled", 0), totals["restarts"])
        if not self._connection_checked:  # the CLI checks first, to exit 1 on a failure
            self._check_connection()
        started = time.monotonic()
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._watchdog = _Watchdog()  # timeouts may also come per dispatch
        self._middleware = hooks.snapshot(self._own_middleware)  # with what the job modules registered since
        self._async_only = bool(self.jobs) and all(cls._is_async for cls in self.jobs.values())
        self._mixed = not self._async_only and any(cls._is_async for cls in self.jobs.values())
        if self.scheduler:
            self._register_periodic()
        served = self._start_metrics()
        if tracing.on and not self._traced:  # on (configure(tracing=True)), maybe by the job modules
            self._traced = True
            tracing.instrument(self)
        self.engine.start(scheduler=self.scheduler)
        if self._async_only:
            self._async_puller = asyncio.run_coroutine_threadsafe(self._async_pull(), self._ensure_loop())
        else:
            for i in range(self.concurrency):
                t = threading.Thread(target=self._puller, name=f"fastjobs-worker-{i}", daemon=True)
                t.start()
                self._threads.append(t)
        self._cancels = threading.Thread(target=self._listen_cancels, name="fastjobs-cancels", daemon=True)
        self._cancels.start()
        log.info("worker started: %s prefix %r, queues %s, concurrency %d, jobs %s", self.client.url, self.client.prefix,
                 self.queues, self.concurrency, sorted(self.jobs))
        registration = self._registration = Registration(self.client, self.engine.worker_id, self.queues, self.concurrency,
                                                         self._registry_interval, self._pool_parent)
        registration.refresh(self.engine.stats)
        try:
            while not self._stop.wait(0.5 if self._on_tick is None else REPORT_EVERY):
                self._report()
                registration.refresh(self.engine.stats)
                if self._on_tick is not None:
                    self._on_tick()
        finally:
            self._shutdown()
            for end in served:
                end()
            registration.remove()
        self._report()
        s = self.engine.stats()
        summary = WorkerSummary(s["completed"], s["retried"], s["failed"], s["released"], time.monotonic() - started, s["stale"],
                                s["cancelled"])
        log.info("worker stopped: %d completed, %d retried, %d failed, %d handed back, %d stale, %d cancelled",
                 summary.completed, summary.retried, summary.failed, summary.handed_back, summary.stale, summary.cancelled)
        return summary

    def _start_metrics(self) -> list[Callable[[], None]]:
        """Metrics on: the queue sampler and (``metrics_port``) the endpoint; what ends them."""
        if self._metrics_mode not in ("serve", "sample"):
            return []
        from . import metrics

        sampler = metrics.Sampler(self._recorder, self.queues, self.connection)
        ends: list[Callable[[], None]] = [sampler.stop]
        if self.metrics_port is not None:
            info = metrics.worker_info(self.engine.worker_id, self.queues, self.concurrency, 1)
            server = metrics.serve(self.metrics_port, lambda: metrics.render_worker(self.metrics_snapshot(), info))
            ends += [server.shutdown, server.server_close]
        sampler.start()
        return ends

    def metrics_snapshot(self) -> dict[str, Any]:
        """This worker's metrics (``metrics.Recorder.snapshot`` and the engine's counters)."""
        snap: dict[str, Any] = self._recorder.snapshot()
        s = self.engine.stats()
        snap.update(stale=s["stale"], lost_leases=s["lost_leases"], handed_back=s["released"])
        return snap

    def _report(self) -> None:
        """Logs the last trouble with the store the engine met since the last call (it keeps
        retrying)."""
        err = self.engine.take_error()
        if err:
            log.warning("%s trouble, retrying: %s", config.store_name(self.client.url), err)
        for note in self.engine.take_callback_notes():
            log.warning("%s", note)

    def _shutdown(self) -> None:
        self.stop()
        self.engine.stop_fetching()
        deadline = time.monotonic() + self.grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._loop is not None:
            self._drain_async(deadline)
        if self._cancels is not None:
            # Out of the engine before the interpreter may finalize: a daemon thread inside a
            # Rust call then would be stopped mid-frame (the process aborts).
            self._cancels.join(2.0)
        if self.engine.running():
            n = self.engine.release_running()
            log.warning("grace period over: handed %d running job(s) back to their queues", n)
        self.engine.drain()
        if self.engine.callbacks_in_flight():
            # After the acknowledgements: the callbacks of the last outcomes are under way.
            given_up = self.engine.drain_callbacks(min(self.grace, CALLBACK_WAIT))
            if given_up:
                log.warning("stopped with %d callback(s) not delivered (recorded as failed)", given_up)
        self.engine.close()

    def _drain_async(self, deadline: float) -> None:
        loop = self._loop
        assert loop is not None

        if self._async_puller is not None:
            try:
                self._async_puller.result(max(1.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - the puller's own failure was logged by asyncio
                log.exception("the async job puller failed")

        async def wait_tasks() -> None:
            pending = list(self._async_tasks)
            if pending:
                _, late = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
                for t in late:
                    t.cancel()
                if late:
                    await asyncio.wait(late, timeout=1.0)
            self._report_async_done()  # before running jobs are handed back (not left to callback order)

        asyncio.run_coroutine_threadsafe(wait_tasks(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        assert self._loop_thread is not None
        self._loop_thread.join(5)
        if not loop.is_running():
            loop.close()


def _callback_settings(secret: str | bytes | None, attempts: int, backoff: float) -> tuple[bytes | None, int, float]:
    """The worker's callback settings, checked: the secret as bytes (``$FASTJOBS_CALLBACK_SECRET``
    when not given), the tries, the first wait."""
    if secret is None:
        secret = os.environ.get("FASTJOBS_CALLBACK_SECRET") or None
    if isinstance(secret, str):
        secret = secret.encode()
    if secret is not None and (not isinstance(secret, bytes) or not secret):
        raise ValueError("callback_secret must be a non-empty str or bytes")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
        raise ValueError(f"callback_attempts must be a whole number from 1 to 100, got {attempts!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0.001 <= backoff <= 3600:
        raise ValueError(f"callback_backoff must be 0.001 to 3600 seconds, got {backoff!r}")
    return secret, attempts, float(backoff)


def _pool(
    spec: dict[str, Any],
    jobs: dict[str, type[Job[Any, Any]]],
    processes: int | str | None,
    max_jobs: int | None,
    max_memory: float | None,
    start_method: str | None,
    grace: float,
    reload: bool,
) -> Pool:
    """Checks a pool's settings, naming the one that is wrong; the pool of a ``Worker``."""
    from .pool import Pool, rss_mb, usable_cores

    if processes is None:
        processes = 1  # reload alone: a pool of one
    if processes == "auto":
        processes = usable_cores()
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a whole number of at least 1, or 'auto', got {processes!r}")
    if max_jobs is not None and (isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1):
        raise ValueError(f"max_jobs_per_child must be a whole number of at least 1, got {max_jobs!r}")
    if max_memory is not None:
        if isinstance(max_memory, bool) or not isinstance(max_memory, (int, float)) or not max_memory > 0:
            raise ValueError(f"max_memory_per_child must be a number of MB above 0, got {max_memory!r}")
        start = rss_mb()
        if max_memory <= start:
            raise ValueError(f"max_memory_per_child of {max_memory:g} MB is below the memory a worker process starts with "
                             f"here ({start:.0f} MB, the job modules imported): every child would be recycled at once")
    if start_method is None:
        start_method = "fork" if sys.platform.startswith("linux") else "spawn"
    if start_method not in ("fork", "spawn"):
        raise ValueError(f"start_method must be 'fork' or 'spawn', got {start_method!r}")
    modules = sorted({cls.__module__ for cls in jobs.values()})
    if start_method == "spawn" and "__main__" in modules:
        named = sorted(n for n, cls in jobs.items() if cls.__module__ == "__main__")
        raise ValueError(f"start_method='spawn' imports the job modules in each child, and jobs {named} are defined in the "
                         "script being run (__main__): move them into a module")
    spec.update(max_jobs=max_jobs, max_memory_mb=max_memory)
    pool = Pool(spec, Worker, processes=processes, modules=modules, start_method=start_method, grace=grace, reload=reload)
    pool.check_reload()
    return pool


def spawned_child() -> None:
    """The entry point of a pool child started with ``start_method="spawn"``."""
    from .pool import spawned

    spawned(Worker)
