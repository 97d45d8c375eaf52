"""Job classes, the registry of names a worker may run, and the decorator for functions."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, overload

from . import _core, feedback, hooks, schemas, serde
from .dispatch import PendingDispatch
from .errors import JobCancelled
from .options import MAX_DURATION, Backoff, BackoffSpec, Duration, check_attempts, check_backoff, check_priority, check_timeout

if TYPE_CHECKING:
    from .bulk import BulkResult

__all__ = ["Job", "job", "registry"]

P = TypeVar("P")
R = TypeVar("R")

#: name -> job class. Only names in here run in a worker: nothing named by a payload is imported.
_REGISTRY: dict[str, type[Job[Any, Any]]] = {}


def registry() -> dict[str, type[Job[Any, Any]]]:
    """A copy of the registered job classes, by name."""
    return dict(_REGISTRY)


class Job(Generic[P, R]):
    """Base class of a job. Subclass it, set defaults as class attributes and write
    ``process(self, payload)``, plain or ``async def``::

        class SendEmail(Job[dict, str]):
            queue = "emails"
            attempts = 3
            backoff = Backoff.exponential(2)

            def process(self, payload: dict) -> str:
                ...

    Inside ``process``: ``self.job_id``, ``self.attempt`` (0 on the first run),
    ``self.queue_name``, ``self.meta``, ``self.group`` and ``self.redelivered`` describe the running job; in a ``JobChain``,
    ``self.previous_result`` and ``self.chain_failure`` too; in a ``JobFlow`` parent,
    ``self.children_results()``. ``self.progress(0.4, **data)`` records its progress and
    ``self.log(message, **data)`` (``self.info``, ``self.success``, ``self.warning``) appends a
    log line, which callers read with ``handle.progress()`` and ``handle.logs()``.
    ``on_complete``, ``on_failure`` and ``on_retry`` run in the worker after the outcome
    (hooks.py). A payload or result type that is a dataclass, a TypedDict or a pydantic model
    (``Job[Order, Receipt]``) is checked at dispatch and handed to ``process`` as that type
    (schemas.py). ``self.cancelled`` turns True when somebody cancels the
    running job; ``self.check_cancelled()`` raises ``JobCancelled`` then (an async handler
    gets ``asyncio.CancelledError`` at its next ``await`` instead).
    """

    #: Registered name; stored with every job (defaults to the class name).
    name: ClassVar[str]
    queue: ClassVar[str] = "default"
    attempts: ClassVar[int] = 1
    backoff: ClassVar[BackoffSpec] = Backoff.exponential(1.0)
    #: How long a run may take before it fails with ``JobTimeoutError``: seconds, ``"30s"``,
    #: ``"2m"``, a ``timedelta`` (None: no limit).
    timeout: ClassVar[Duration | None] = None
    #: 0 (default) to 9; higher runs first within a queue.
    priority: ClassVar[int] = 0
    #: Named connection (see ``fastjobs.configure``).
    connection: ClassVar[str] = "default"

    job_id: str
    attempt: int
    queue_name: str
    meta: dict[str, Any]
    #: The group of its queue the job belongs to (``.group(key)``), or None.
    group: str | None = None
    #: True when the worker that held this job before died while it may have been running it:
    #: this run may repeat work a run that was cut short began (``attempt`` counts only runs
    #: known to have started).
    redelivered: bool = False
    #: In a JobChain step: the previous step's return value (None in the first step).
    previous_result: Any = None
    #: In a JobChain's on_failure job: the failure (chain_id, step, job_id, name, error).
    chain_failure: dict[str, Any] | None = None

    # Resolved at class creation, read on the worker's hot path.
    _is_async: ClassVar[bool]
    _backoff: ClassVar[Any]
    _timeout: ClassVar[float | None]
    #: The outcomes the class defines a hook for ("complete", "failure", "retry"), and whether
    #: it defines any: the worker reads ``_hooked`` once per job (hooks.py).
    _hook_kinds: ClassVar[frozenset[str]] = frozenset()
    _hooked: ClassVar[bool] = False
    #: Typed payloads and results (schemas.py): the declared types' schemas, or None; and the
    #: functions dispatch and the worker call, serde's own for a class that declares none.
    _payload_schema: ClassVar[Any] = None
    _result_schema: ClassVar[Any] = None
    _dump_payload: ClassVar[Callable[..., bytes]] = staticmethod(serde.dumps)
    _load_payload: ClassVar[Callable[[bytes], Any]] = staticmethod(serde.loads)
    _dump_result: ClassVar[Callable[..., bytes]] = staticmethod(serde.dumps)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        if not isinstance(cls.name, str) or not 0 < len(cls.name.encode()) <= 255:
            raise TypeError(f"{cls.__qualname__}.name must be a non-empty string of at most 255 bytes")
        _core.validate_queue_name(cls.queue)
        check_attempts(cls.attempts)
        check_priority(cls.priority)
        cls._timeout = check_timeout(cls.timeout)
        cls._backoff = check_backoff(cls.backoff, allow_callable=True)
        cls._hook_kinds = frozenset(k for k, m in hooks.KINDS.items() if getattr(cls, m) is not getattr(Job, m))
        cls._hooked = bool(cls._hook_kinds)
        process = getattr(cls, "process", None)
        if process is None or process is Job.process:
            return  # an abstract base: registered (and dispatchable) once a subclass defines process
        cls._is_async = inspect.iscoroutinefunction(process)
        payload_type, result_type = schemas.declared(cls)
        cls._payload_schema, cls._result_schema = schemas.schema_for(payload_type), schemas.schema_for(result_type)
        dump_payload, load_payload, dump_result = schemas.codecs(cls, cls._payload_schema, cls._result_schema)
        cls._dump_payload, cls._load_payload, cls._dump_result = (staticmethod(dump_payload), staticmethod(load_payload),
                                                                  staticmethod(dump_result))
        _register(cls)

    def process(self, payload: P, /) -> R | Awaitable[R]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- hooks (hooks.py): run by the worker once the outcome is known ----

    def on_complete(self, result: R) -> Any:
        """Runs in the worker after the job completed (its result handed to the engine), on
        this instance. An ``async def`` hook is awaited on the worker's event loop. A hook
        that raises is logged; the job stays completed."""

    def on_failure(self, error: BaseException) -> Any:
        """Runs in the worker after the job failed for good (no attempt left; not when it was
        cancelled), with the exception of its last attempt."""

    def on_retry(self, error: BaseException, delay: float) -> Any:
        """Runs in the worker after a failed attempt when another one is scheduled, with its
        exception and the seconds until the next attempt."""

    # ---- cancellation (cooperative: the handler decides where it can stop) ----

    @property
    def cancelled(self) -> bool:
        """True once somebody asked to cancel this running job (``handle.cancel()``,
        ``Queue.cancel(id)``); the worker hears of it within a round trip."""
        run = self.__dict__.get("_run")
        return run is not None and bool(run[0].is_cancelled(run[1]))

    def check_cancelled(self) -> None:
        """Raises ``JobCancelled`` if this job was asked to cancel: call it where the handler
        can stop cleanly. The job then ends as cancelled (not retried)."""
        if self.cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled while it ran", self.job_id, self.queue_name)

    # ---- progress and log lines (docs/DESIGN.md, "Progress and log lines") ----

    def progress(self, value: float, /, **data: Any) -> None:
        """Records the job's progress, from 0 to 1, with optional JSON ``data``
        (``self.progress(0.4, rows=4000)``); it replaces the last one, and callers read it with
        ``handle.progress()``. In a worker this is one Redis call (an async handler may use
        ``await self.progress_async(...)``). Outside a worker (``dispatch_now``) nothing is
        written: the last progress is kept on the instance. Raises ``ValueError`` for a value
        outside 0..1 or not finite, ``TypeError`` for data JSON cannot hold."""
        v, entry = feedback.progress_entry(value, data)
        run = self.__dict__.get("_run")
        if run is None:
            self.__dict__["_progress"] = feedback.Progress(v, data, feedback.now())
            return
        run[0].client.feedback(self.queue_name, self.job_id, "progress", entry)

    async def progress_async(self, value: float, /, **data: Any) -> None:
        """``progress`` for async handlers: the write is awaited."""
        v, entry = feedback.progress_entry(value, data)
        run = self.__dict__.get("_run")
        if run is None:
            self.__dict__["_progress"] = feedback.Progress(v, data, feedback.now())
            return
        await run[0].client.feedback(self.queue_name, self.job_id, "progress", entry, asynchronous=True)

    def log(self, message: str, /, level: str = "info", **data: Any) -> None:
        """Appends a log line to the job's log: ``level`` (debug, info, success, warning,
        error), the ``message`` and optional JSON ``data``, with the time (Redis's clock).
        Callers read the lines with ``handle.logs()``; the newest 1,000 are kept. A line takes
        at most 8 KiB of JSON (``ValueError`` past it, nothing written); a message that is not
        a str raises ``TypeError``. Outside a worker the lines are kept on the instance."""
        entry = feedback.log_entry(message, level, data)
        run = self.__dict__.get("_run")
        if run is None:
            self._keep_line(message, level, data)
            return
        run[0].client.feedback(self.queue_name, self.job_id, "log", entry)

    async def log_async(self, message: str, /, level: str = "info", **data: Any) -> None:
        """``log`` for async handlers: the write is awaited."""
        entry = feedback.log_entry(message, level, data)
        run = self.__dict__.get("_run")
        if run is None:
            self._keep_line(message, level, data)
            return
        await run[0].client.feedback(self.queue_name, self.job_id, "log", entry, asynchronous=True)

    def info(self, message: str, /, **data: Any) -> None:
        """``self.log(message, level="info", **data)``."""
        self.log(message, "info", **data)

    def success(self, message: str, /, **data: Any) -> None:
        """``self.log(message, level="success", **data)``."""
        self.log(message, "success", **data)

    def warning(self, message: str, /, **data: Any) -> None:
        """``self.log(message, level="warning", **data)``."""
        self.log(message, "warning", **data)

    def _keep_line(self, message: str, level: str, data: dict[str, Any]) -> None:
        lines = self.__dict__.setdefault("_logs", [])
        lines.append(feedback.LogLine(feedback.now(), level, message, data))
        del lines[:-feedback.MAX_LOG_LINES]

    # ---- dispatching ----

    @classmethod
    def dispatch(cls, payload: P) -> PendingDispatch[R]:
        """A dispatch builder: chain options, then ``.send()`` it or ``await`` it."""
        # Imported at the top, not here: an import statement in a function costs ~2 µs a call.
        return PendingDispatch(cls, payload)

    @classmethod
    def dispatch_many(cls, payloads: Iterable[P], *, progress: Any = None, chunk_size: int = 10_000, **options: Any) -> BulkResult:
        """Dispatches one job per payload, all with the same options (``queue``, ``delay``,
        ``at``, ``attempts``, ``backoff``, ``timeout``, ``priority``, ``meta``, ``connection``,
        ``deduplicate``, ``debounce``, ``group``).

        ``deduplicate=key`` (or ``{"key": key, "ttl": seconds}``) and ``debounce={"key": key,
        "delay": seconds}`` take a str or a function ``payload -> str`` as the key, and so does
        ``group=``; then every payload is checked first and the jobs go through the general
        script, 1,000 per call.

        ``payloads`` may be a list (validated and serialized whole before the first write: a
        bad payload raises ``TypeError``/``ValueError`` naming its index and nothing is
        enqueued) or any iterable or generator (written in chunks as it is consumed, with flat
        memory; a failure raises ``BulkDispatchError`` carrying the jobs already committed).
        ``progress`` is a callable ``(done, total)`` or True for a progress bar on a terminal.
        """
        from .bulk import dispatch_many

        return dispatch_many(cls, payloads, progress=progress, chunk_size=chunk_size, **options)

    @classmethod
    async def dispatch_many_async(cls, payloads: Iterable[P], *, progress: Any = None, chunk_size: int = 10_000,
                                  **options: Any) -> BulkResult:
        """``dispatch_many`` for asyncio: the writes are awaited, the event loop keeps running."""
        from .bulk import dispatch_many_async

        return await dispatch_many_async(cls, payloads, progress=progress, chunk_size=chunk_size, **options)

    @classmethod
    def dispatch_now(cls, payload: P) -> Any:
        """Runs the handler inline, in this process, and returns its result (its error is
        raised as is). The payload goes through JSON as it would through the queue, and so
        does a result of a declared type (it comes back as that type). An async handler is
        awaited: inside a running event loop this returns an awaitable."""
        data = cls._load_payload(cls._dump_payload(payload))
        inst = cls._instance(f"now-{id(data):x}", 0, cls.queue, {})
        if cls._is_async:
            coro = inst.process(data)
            if cls._result_schema is not None:
                coro = cls._typed_result_async(coro)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(coro)  # type: ignore[arg-type]
            return coro
        result = inst.process(data)
        return result if cls._result_schema is None else cls._typed_result(result)

    @classmethod
    def _typed_result(cls, result: Any) -> Any:
        """A result as a worker stores it and a handle gives it back (schemas.py)."""
        if result is None:
            return None
        load = schemas.result_loader(cls._result_schema)
        assert load is not None
        return load(serde.loads(cls._dump_result(result, "result")))

    @classmethod
    async def _typed_result_async(cls, coro: Any) -> Any:
        return cls._typed_result(await coro)

    def children_results(self) -> dict[str, dict[str, Any]]:
        """In a JobFlow parent: what each child left, by child job id: ``{"name", "result"}``,
        or ``{"name", "error"}`` for a child that failed under the ``ignore`` policy (children
        under ``continue_parent`` that failed are absent). Empty outside a flow."""
        from .flow import children_results

        client, flow = self.__dict__.get("_flow", (None, None))
        return children_results(client, flow)

    @classmethod
    def _instance(cls, job_id: str, attempt: int, queue_name: str, meta: dict[str, Any], redelivered: bool = False) -> Job[P, R]:
        inst = cls.__new__(cls)
        inst.__dict__.update(job_id=job_id, attempt=attempt, queue_name=queue_name, meta=meta)
        if redelivered:
            inst.__dict__["redelivered"] = True
        return inst

    @classmethod
    def retry_delay(cls, attempt: int, backoff: Any = None) -> float:
        """Seconds to wait after ``attempt`` failed attempts, from ``backoff`` or the class's."""
        b = backoff if backoff is not None else cls._backoff
        if b is None:
            return 0.0
        if isinstance(b, Backoff):
            return b.seconds(attempt)
        # A backoff function's answer is clamped to 0-100 years (NaN: no wait), as a
        # Backoff's doubling is: it is computed as a job fails, when raising would lose it.
        try:
            d = float(b(attempt))
        except OverflowError:  # an int past the floats
            d = MAX_DURATION
        return min(d, MAX_DURATION) if d > 0 else 0.0


def _register(cls: type[Job[Any, Any]]) -> None:
    existing = _REGISTRY.get(cls.name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(
            f"job name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}; "
            f"set a distinct `name = ...` on {cls.__module__}.{cls.__qualname__}"
        )
    _REGISTRY[cls.name] = cls


F = TypeVar("F", bound=Callable[..., Any])


class _JobDecorator(Protocol):
    """What ``@job(...)`` with options returns: a decorator keeping the function's types (an
    async function's job results in what its coroutine returns)."""

    @overload
    def __call__(self, fn: Callable[[P], Awaitable[R]], /) -> FunctionJob[P, R]: ...

    @overload
    def __call__(self, fn: Callable[[P], R], /) -> FunctionJob[P, R]: ...


class FunctionJob(Generic[P, R]):
    """What ``@job`` returns: the function, still callable, with the job's dispatch methods."""

    def __init__(self, fn: Callable[[P], Any], job_class: type[Job[P, R]]) -> None:
        self.fn = fn
        self.job_class = job_class
        self.__name__ = getattr(fn, "__name__", job_class.name)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, payload: P) -> Any:
        return self.fn(payload)

    def dispatch(self, payload: P) -> PendingDispatch[R]:
        return self.job_class.dispatch(payload)

    def dispatch_now(self, payload: P) -> Any:
        return self.job_class.dispatch_now(payload)

    def dispatch_many(self, payloads: Iterable[P], **options: Any) -> BulkResult:
        return self.job_class.dispatch_many(payloads, **options)

    async def dispatch_many_async(self, payloads: Iterable[P], **options: Any) -> BulkResult:
        return await self.job_class.dispatch_many_async(payloads, **options)

    @property
    def name(self) -> str:
        return self.job_class.name

    def __repr__(self) -> str:
        return f"<job {self.job_class.name!r} from {self.fn!r}>"


def _async_process(f: Callable[[Any], Awaitable[Any]]) -> Callable[[Job[Any, Any], Any], Awaitable[Any]]:
    """The ``process`` method of a job made from a coroutine function."""

    async def process(self: Job[Any, Any], payload: Any) -> Any:
        return await f(payload)

    process.__fastjobs_fn__ = f  # type: ignore[attr-defined]  # its annotations declare the types (schemas.py)
    return process


def _sync_process(f: Callable[[Any], Any]) -> Callable[[Job[Any, Any], Any], Any]:
    """The ``process`` method of a job made from a plain function."""

    def process(self: Job[Any, Any], payload: Any) -> Any:
        return f(payload)

    process.__fastjobs_fn__ = f  # type: ignore[attr-defined]  # its annotations declare the types (schemas.py)
    return process


@overload
def job(fn: Callable[[P], Awaitable[R]]) -> FunctionJob[P, R]: ...


@overload
def job(fn: Callable[[P], R]) -> FunctionJob[P, R]: ...


@overload
def job(
    fn: None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    attempts: int = 1,
    backoff: BackoffSpec = Backoff.exponential(1.0),
    timeout: Duration | None = None,
    priority: int = 0,
    connection: str = "default",
) -> _JobDecorator: ...


def job(fn: Callable[[P], Any] | None = None, **defaults: Any) -> Any:
    """Makes a job of a plain function (sync or async) taking the payload::

        @job(queue="emails", attempts=3)
        def send_email(payload: dict) -> None: ...

        send_email.dispatch({"to": "a@b.c"}).send()
    """
    allowed = {"name", "queue", "attempts", "backoff", "timeout", "priority", "connection"}
    unknown = set(defaults) - allowed
    if unknown:
        raise TypeError(f"unknown job option(s) {sorted(unknown)}; use {sorted(allowed)}")

    def wrap(f: Callable[[P], Any]) -> FunctionJob[P, Any]:
        attrs: dict[str, Any] = dict(defaults)
        attrs.setdefault("name", getattr(f, "__name__", "job"))
        attrs["process"] = _async_process(f) if inspect.iscoroutinefunction(f) else _sync_process(f)
        attrs["__module__"] = getattr(f, "__module__", __name__)
        attrs["__qualname__"] = getattr(f, "__qualname__", attrs["name"])
        cls = type(attrs["name"], (Job,), attrs)
        return FunctionJob(f, cls)

    return wrap(fn) if fn is not None else wrap
