"""Dispatch builders and job handles."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import warnings
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _core, config, feedback, postgres, schemas, serde, tracing
from .callbacks import CallbackStatus, check_callback, parse_status
from .errors import JobCancelled, JobFailed, UnknownJobError, UnsentDispatchWarning
from .hooks import hook_name
from .options import (
    OPTION_NAMES,
    Backoff,
    Duration,
    check_attempts,
    check_backoff,
    check_dedup_key,
    check_group_key,
    check_priority,
    check_timeout,
    check_wait_timeout,
    due_time_us,
    parse_duration,
)

if TYPE_CHECKING:
    from .job import Job

__all__ = ["PendingDispatch", "JobHandle", "JobInfo"]

R = TypeVar("R")

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    Self = Any


_UNSENT, _SENT, _ABANDONED = 0, 1, 2

#: The fields of ``with_("deduplicate", {...})`` and ``with_("debounce", {...})``.
_DEDUP_FIELDS = {"deduplicate": frozenset({"key", "ttl"}), "debounce": frozenset({"key", "delay"})}
_HOOK_OPTIONS = frozenset({"on_complete", "on_failure", "on_retry"})
_ID_AND_KEY = "job_id (or idempotency_key) and a deduplication key both deduplicate: give a job one of them"

F = TypeVar("F", bound=Callable[..., Any])


def _abandon_on_error(method: F) -> F:
    """A builder whose option or send raised was dealt with by the caller: no unsent warning."""

    @functools.wraps(method)
    def wrapper(self: PendingDispatch[Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            if self._sent == _UNSENT:
                self._sent = _ABANDONED
            raise

    return wrapper  # type: ignore[return-value]


class PendingDispatch(Generic[R]):
    """A job about to be dispatched. Options chain; ``.send()`` (sync) or ``await`` sends it
    once. A builder collected without being sent warns with ``UnsentDispatchWarning``."""

    __slots__ = ("job_class", "payload", "_queue", "_delay", "_due_at", "_job_id", "_attempts", "_backoff", "_timeout",
                 "_priority", "_meta", "_connection", "_dedup", "_group", "_hooks", "_callbacks", "_trace", "_sent", "__weakref__")

    def __init__(self, job_class: type[Job[Any, R]], payload: Any) -> None:
        self._sent = _ABANDONED  # until validated: a builder that failed to build must not warn
        if getattr(job_class, "_is_async", None) is None:
            raise TypeError(f"{job_class.__qualname__} defines no process(self, payload) and cannot be dispatched")
        self.job_class = job_class
        self.payload = payload
        self._queue: str = job_class.queue
        self._delay = 0.0
        #: at(): the absolute due time (epoch seconds), turned into a delay when sent, so a
        #: builder sent later (a large BulkDispatcher) is still due at the time asked for.
        self._due_at: int | None = None  # µs since the epoch
        self._job_id: str | None = None
        self._attempts: int = job_class.attempts
        self._backoff: Backoff | None = None
        self._timeout: float | None = None
        self._priority: int = job_class.priority
        self._meta: dict[str, Any] | None = None
        self._connection: str = job_class.connection
        #: deduplicate() / debounce(): (mode, key, ttl ms), mode "ttl", "until" or "debounce".
        self._dedup: tuple[str, str, int] | None = None
        #: group(): the group the job waits in (its options carry it, "group").
        self._group: str | None = None
        #: on_complete() / on_failure() / on_retry(): hook names by outcome (options "hooks").
        self._hooks: dict[str, list[str]] | None = None
        #: callback() / failure_callback(): {"callback": {...}, "failure_callback": {...}}.
        self._callbacks: dict[str, dict[str, Any]] | None = None
        #: tracing on (tracing.py): the W3C trace context of the dispatch's span (options "trace").
        self._trace: dict[str, str] | None = None
        self._sent = _UNSENT

    # ---- options ----

    @_abandon_on_error
    def with_(self, option: str, value: Any) -> Self:
        """Sets any option by name, as ``.with('attempts', 5)`` does in Laravel-style APIs: queue, delay, at,
        job_id, attempts, backoff, timeout, priority, meta, deduplicate, debounce, group, on_complete, on_failure,
        on_retry (a hook or a list of them), callback, failure_callback (a URL, or a dict with url and headers).
        Durations are in seconds."""
        if option not in OPTION_NAMES:
            raise ValueError(f"unknown option {option!r}; known options: {', '.join(sorted(OPTION_NAMES))}")
        if option in _DEDUP_FIELDS and isinstance(value, Mapping):
            # BullMQ's form: {"key": ..., "ttl": ...} / {"key": ..., "delay": ...}
            unknown = set(value) - _DEDUP_FIELDS[option]
            if unknown or "key" not in value:
                raise ValueError(f"{option} takes a key, or a dict with {' and '.join(sorted(_DEDUP_FIELDS[option]))}"
                                 f"{f'; unknown: {sorted(unknown)}' if unknown else ''}")
            return getattr(self, option)(**value)
        if option in _HOOK_OPTIONS and isinstance(value, (list, tuple)):
            for fn in value:
                getattr(self, option)(fn)
            return self
        if option in ("callback", "failure_callback") and isinstance(value, Mapping):
            unknown = set(value) - {"url", "headers"}
            if unknown or "url" not in value:
                raise ValueError(f"{option} takes a URL, or a dict with url and headers"
                                 f"{f'; unknown: {sorted(unknown)}' if unknown else ''}")
            return getattr(self, option)(value["url"], headers=value.get("headers"))
        return getattr(self, {"queue": "on_queue"}.get(option, option))(value)

    @_abandon_on_error
    def on_queue(self, name: str) -> Self:
        if not isinstance(name, str):
            raise ValueError(f"queue name must be a string, got {type(name).__name__}")
        _core.validate_queue_name(name)
        self._queue = name
        return self

    @_abandon_on_error
    def on_connection(self, name: str) -> Self:
        config.settings(name)  # raises for an unknown name
        self._connection = name
        return self

    @_abandon_on_error
    def delay(self, value: Duration) -> Self:
        """Runs the job no earlier than ``value`` from now (seconds, timedelta, '10m', '3d'),
        0 to 100 years."""
        self._refuse_with_debounce("delay()")
        self._delay = parse_duration(value, "delay")
        self._due_at = None
        return self

    @_abandon_on_error
    def at(self, when: datetime) -> Self:
        """Runs the job no earlier than ``when``; naive datetimes are UTC, past ones mean now,
        and the latest is 9999-12-31 UTC."""
        self._refuse_with_debounce("at()")
        # A time before the epoch is in the past too: due at once.
        self._due_at = max(0, due_time_us(when, "at()"))
        self._delay = 0.0
        return self

    @_abandon_on_error
    def job_id(self, value: str) -> Self:
        """A caller-chosen id: dispatching it again while the first job is known returns the
        first job's handle (``created`` False) instead of a second job."""
        if not isinstance(value, str) or not value:
            raise ValueError("job_id must be a non-empty string")
        if self._dedup is not None:
            raise ValueError(_ID_AND_KEY)
        _core.validate_job_id(value)  # checked now: a BulkDispatcher must not fail half-way
        self._job_id = value
        return self

    @_abandon_on_error
    def idempotency_key(self, key: str) -> Self:
        """An idempotency key: a repeated dispatch with the same key returns the first
        job's handle (``created`` False) instead of making a second job, for as long as the
        first job is known (30 days at least). It becomes the job's id (see ``job_id``)."""
        return self.job_id(key)

    @_abandon_on_error
    def deduplicate(self, key: str, ttl: Duration | None = None) -> Self:
        """A deduplication key: while another job of this queue holds ``key``, this dispatch
        writes nothing and returns that job's handle (``deduplicated`` True). Without ``ttl``
        the key is held until its job completes or fails for good; with ``ttl`` (more than 0),
        for that long after the job holding it was dispatched, whatever became of it."""
        key = check_dedup_key(key)
        if ttl is None:
            mode, ms = "until", 0
        else:
            mode, ms = "ttl", max(1, math.ceil(parse_duration(ttl, "deduplicate ttl", exclusive=True) * 1000))
        if self._dedup is not None and self._dedup[0] == "debounce":
            raise ValueError("deduplicate() and debounce() are two deduplication modes: give a job one of them")
        if self._job_id is not None:
            raise ValueError(_ID_AND_KEY)
        self._dedup = (mode, key, ms)
        return self

    @_abandon_on_error
    def debounce(self, key: str, delay: Duration) -> Self:
        """Runs the job ``delay`` (more than 0) from now, unless another dispatch with ``key``
        comes first: while this job waits (delayed, never started), a dispatch with the same
        key replaces its payload and options and starts its delay again, and returns its handle
        (``deduplicated`` True). Once it started, a dispatch with the key makes a new job."""
        key = check_dedup_key(key)
        seconds = parse_duration(delay, "debounce delay", exclusive=True)
        if self._dedup is not None and self._dedup[0] != "debounce":
            raise ValueError("deduplicate() and debounce() are two deduplication modes: give a job one of them")
        if self._delay > 0 or self._due_at is not None:
            raise ValueError("debounce() sets the job's delay itself: it cannot be combined with delay() or at()")
        if self._job_id is not None:
            raise ValueError(_ID_AND_KEY)
        self._dedup = ("debounce", key, 0)
        self._delay = seconds
        return self

    @_abandon_on_error
    def group(self, key: str) -> Self:
        """Puts the job in group ``key`` of its queue (a tenant, a user, an account): it waits
        in its group's own list, in order, and workers take the groups that have jobs waiting
        in turns, so one group with many jobs does not hold up the others; per-group limits
        (``Queue.set_group_limits``) apply to it. ``key`` is a str of 1 to 255 bytes without
        control characters."""
        self._group = check_group_key(key)
        return self

    @_abandon_on_error
    def on_complete(self, hook: Callable[..., Any] | str) -> Self:
        """Runs ``hook(job, result)`` in the worker once the job completed, ``job`` the instance
        that ran it. ``hook`` is a function registered with ``@fastjobs.hook`` (or its name):
        the job carries its name, and the worker finds it among the hooks its modules
        registered. Raises ``TypeError`` for an unregistered function."""
        return self._add_hook("complete", hook)

    @_abandon_on_error
    def on_failure(self, hook: Callable[..., Any] | str) -> Self:
        """Runs ``hook(job, error)`` in the worker once the job failed for good (not when it is
        cancelled), ``error`` the exception of its last attempt; see ``on_complete``."""
        return self._add_hook("failure", hook)

    @_abandon_on_error
    def on_retry(self, hook: Callable[..., Any] | str) -> Self:
        """Runs ``hook(job, error, delay)`` in the worker after a failed attempt when another is
        scheduled, ``delay`` seconds from now; see ``on_complete``."""
        return self._add_hook("retry", hook)

    def _add_hook(self, kind: str, hook: Any) -> Self:
        name = hook_name(hook, kind)
        if self._hooks is None:
            self._hooks = {}
        self._hooks.setdefault(kind, []).append(name)
        return self

    @_abandon_on_error
    def callback(self, url: str, *, headers: Mapping[str, str] | None = None) -> Self:
        """Posts the job's outcome to ``url`` (http or https) when it completes: a signed JSON
        body (README "Callbacks"), with ``headers`` added to the request. The worker that ran
        the job posts it once the outcome is stored, and tries again on errors."""
        return self._set_callback("callback", url, headers)

    @_abandon_on_error
    def failure_callback(self, url: str, *, headers: Mapping[str, str] | None = None) -> Self:
        """Posts the job's outcome to ``url`` when it fails for good (its attempts used up),
        as ``callback`` does on completion."""
        return self._set_callback("failure_callback", url, headers)

    def _set_callback(self, kind: str, url: str, headers: Mapping[str, str] | None) -> Self:
        spec = check_callback(url, headers, kind)
        self._callbacks = {**(self._callbacks or {}), kind: spec}
        return self

    def _refuse_with_debounce(self, what: str) -> None:
        if self._dedup is not None and self._dedup[0] == "debounce":
            raise ValueError(f"debounce() sets the job's delay itself: it cannot be combined with {what}")

    def _dedup_spec(self) -> tuple[str, str, int] | None:
        """The deduplication handed to the engine beside the job tuple: (mode, key, ttl ms)."""
        return self._dedup

    @_abandon_on_error
    def attempts(self, value: int) -> Self:
        self._attempts = check_attempts(value)
        return self

    @_abandon_on_error
    def backoff(self, value: Any) -> Self:
        self._backoff = check_backoff(value, allow_callable=False)  # type: ignore[assignment]
        return self

    @_abandon_on_error
    def timeout(self, value: Duration) -> Self:
        self._timeout = check_timeout(value)
        return self

    @_abandon_on_error
    def priority(self, value: int) -> Self:
        self._priority = check_priority(value)
        return self

    @_abandon_on_error
    def meta(self, value: Mapping[str, Any]) -> Self:
        """Metadata kept with the job (user, org, ...), visible to the handler as ``self.meta``."""
        if not isinstance(value, Mapping):
            raise ValueError(f"meta must be a mapping, got {type(value).__name__}")
        self._meta = dict(value)
        return self

    # ---- sending ----

    def _options_json(self) -> bytes | None:
        opts: dict[str, Any] = {}
        if self._backoff is not None:
            opts["backoff"] = self._backoff.to_json()
        if self._timeout is not None:
            opts["timeout"] = self._timeout
        if self._meta:
            opts["meta"] = self._meta
        if self._dedup is not None and self._dedup[0] == "until":
            # The worker's engine reads it to release the key when the job settles.
            opts["dedup"] = self._dedup[1]
        if self._group is not None:
            # The scripts and the worker's engine read it: the job's list, its group's limits.
            opts["group"] = self._group
        if self._hooks is not None:
            # The worker reads it: hooks.py runs the named hooks after the outcome.
            opts["hooks"] = self._hooks
        if self._callbacks is not None:
            # The worker's engine reads them when it hands the job out (callback.rs).
            opts.update(self._callbacks)
        if self._trace is not None:
            # The worker runs the job in a span that is a child of this context (tracing.py).
            opts["trace"] = self._trace
        return serde.dumps(opts, "options") if opts else None

    def _at_us(self) -> int | None:
        return self._due_at

    def _job_tuple(self) -> tuple[str, bytes, bytes | None, int, int, int, str | None, int | None]:
        """The wire form handed to the engine; raises before anything is sent. Times are µs,
        rounded up (a job never runs before the moment asked for). An at() time travels as a
        due time: a job written late (a large bulk) is still due when asked."""
        return (
            self.job_class.name,
            self.job_class._dump_payload(self.payload),  # serde.dumps, or a typed payload's check first
            self._options_json(),
            self._attempts,
            self._priority,
            math.ceil(self._delay * 1_000_000),
            self._job_id,
            self._at_us(),
        )

    def _claim(self) -> None:
        if self._sent == _SENT:
            raise RuntimeError("this dispatch was already sent; build a new one with Job.dispatch()")
        self._sent = _SENT

    def send(self, *, conn: Any = None) -> JobHandle[R]:
        """Writes the job to its store and returns its handle. ``conn``: a psycopg (3) or
        psycopg2 connection or cursor on the job's PostgreSQL database: the job is written in
        that connection's transaction, so it exists once the application commits and never if
        it rolls back (its worker is woken at the commit)."""
        self._claim()
        span = None
        try:
            pg = None if conn is None else postgres.check_conn(conn, asynchronous=False)
            if tracing.on:
                span, self._trace = tracing.producer(self.job_class.name, self._queue)
            job = self._job_tuple()
            client = config.client(self._connection)
            if pg is None:
                dedup = None if self._dedup is None else [self._dedup]
                [(job_id, created, deduplicated)] = client.enqueue(self._queue, [job], dedup=dedup)
            else:
                sql, params = client.enqueue_statement(self._queue, job, dedup=self._dedup)
                job_id, created, deduplicated = postgres.answer(params["id"], postgres.execute(*pg, sql, params))
        except BaseException as e:
            self._sent = _ABANDONED  # the caller has the error; sending again is allowed
            if span is not None:
                tracing.end(span, error=e)
            raise
        if span is not None:
            tracing.end(span, job_id)
        return JobHandle(job_id, self._queue, self._connection, created, deduplicated, job_class=self.job_class)

    async def send_async(self, *, conn: Any = None) -> JobHandle[R]:
        """``send`` for async code; ``conn``: an async psycopg connection or cursor."""
        self._claim()
        span = None
        try:
            pg = None if conn is None else postgres.check_conn(conn, asynchronous=True)
            if tracing.on:
                span, self._trace = tracing.producer(self.job_class.name, self._queue)
            job = self._job_tuple()
            client = config.client(self._connection)
            if pg is None:
                dedup = None if self._dedup is None else [self._dedup]
                [(job_id, created, deduplicated)] = await client.enqueue(self._queue, [job], dedup=dedup, asynchronous=True)
            else:
                sql, params = client.enqueue_statement(self._queue, job, dedup=self._dedup)
                job_id, created, deduplicated = postgres.answer(params["id"], await postgres.execute_async(pg[1], sql, params))
        except BaseException as e:
            self._sent = _ABANDONED
            if span is not None:
                tracing.end(span, error=e)
            raise
        if span is not None:
            tracing.end(span, job_id)
        return JobHandle(job_id, self._queue, self._connection, created, deduplicated, job_class=self.job_class)

    def __await__(self) -> Generator[Any, None, JobHandle[R]]:
        return self.send_async().__await__()

    @_abandon_on_error
    def wait_result(self, timeout: float | None = None) -> R:
        """Sends the job and waits for its result (``.dispatch(...).waitResult()`` in JavaScript queues)."""
        check_wait_timeout(timeout)  # before sending: a bad timeout must not leave a job behind
        return self.send().wait_result(timeout=timeout)

    async def wait_result_async(self, timeout: float | None = None) -> R:
        try:
            check_wait_timeout(timeout)
        except ValueError:
            self._sent = _ABANDONED  # the caller has the error: no unsent warning
            raise
        handle = await self.send_async()
        return await handle.wait_result_async(timeout=timeout)

    def __del__(self) -> None:
        if getattr(self, "_sent", _ABANDONED) == _UNSENT:
            warnings.warn(
                f"a dispatch of {self.job_class.name!r} was never sent: call .send() or await it",
                UnsentDispatchWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        return f"<PendingDispatch {self.job_class.name!r} queue={self._queue!r} sent={self._sent == _SENT}>"


@dataclass(frozen=True)
class JobInfo:
    """A job's state as Redis knows it. ``result`` is set once completed; ``error`` once failed,
    and while a job waits to run again after a failed attempt (that attempt's error)."""

    id: str
    queue: str
    state: str
    name: str | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    priority: int | None = None
    enqueued_at: datetime | None = None
    payload: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: dict[str, Any] | None = None
    #: The last progress the job reported (``self.progress()``), or None.
    progress: feedback.Progress | None = None
    #: How its callback went (``JobHandle.callback_status()``), or None.
    callback: CallbackStatus | None = None


def job_info(job_id: str, queue: str, status: tuple[Any, ...]) -> JobInfo:
    state, record, data = status[:3]
    info: dict[str, Any] = {}
    if record is not None:
        name, attempt, max_attempts, priority, enqueued_ms, options, payload = record
        info = dict(
            name=name,
            attempt=attempt,
            max_attempts=max_attempts,
            priority=priority,
            enqueued_at=datetime.fromtimestamp(enqueued_ms / 1000, timezone.utc),
            payload=_loads_or_raw(payload),
            options=serde.loads(options) if options else {},
        )
    if data is not None:
        if state in ("failed", "delayed"):
            info["error"] = serde.loads_error(data)
        elif state == "completed":
            info["result"] = serde.loads_result(data, job_id)
    if len(status) > 3 and status[3] is not None:
        info["progress"] = feedback.parse_progress(status[3])
    if len(status) > 4 and status[4] is not None:
        info["callback"] = parse_status(status[4])
    return JobInfo(id=job_id, queue=queue, state=state, **info)


def _loads_or_raw(b: bytes) -> Any:
    try:
        return serde.loads(b)
    except ValueError:
        return b


def _outcome(job_id: str, queue: str, status: tuple[str, Any, bytes | None] | None, timeout: float | None) -> Any:
    if status is None:
        raise TimeoutError(f"job {job_id} on queue {queue!r} did not finish within {timeout} s")
    state, _, data = status
    if state == "completed":
        return serde.loads_result(data, job_id) if data is not None else None
    if state == "failed":
        raise JobFailed.from_error(job_id, queue, serde.loads_error(data) if data else {})
    if state == "cancelled":
        raise JobCancelled(f"job {job_id} on queue {queue!r} was cancelled", job_id, queue)
    raise UnknownJobError(f"no job {job_id} in queue {queue!r} (never dispatched, or expired)")


class JobHandle(Generic[R]):
    """A dispatched job: its ``id``, its state, and its result when it finishes."""

    __slots__ = ("id", "queue", "connection", "created", "deduplicated", "job_class")

    def __init__(self, job_id: str, queue: str, connection: str = "default", created: bool = True,
                 deduplicated: bool = False, *, job_class: type[Job[Any, R]] | None = None) -> None:
        self.id = job_id
        self.queue = queue
        self.connection = connection
        #: False when this dispatch made no new job: a job with its caller-chosen id existed
        #: already, or another job held its deduplication key.
        self.created = created
        #: True when another job held the dispatch's deduplication key: ``id`` is that job's.
        #: With ``deduplicate()`` the dispatch was dropped; with ``debounce()`` the waiting job
        #: took its payload and options and its delay started again.
        self.deduplicated = deduplicated
        #: The job's class when the handle was made by its dispatch: ``wait_result`` and
        #: ``info().result`` then give a declared result type back as that type (else JSON).
        self.job_class = job_class

    def status(self) -> str:
        """One of waiting, delayed, active, completed, failed, cancelled, unknown."""
        return str(config.client(self.connection).status(self.queue, self.id)[0])

    async def status_async(self) -> str:
        return str((await config.client(self.connection).status(self.queue, self.id, asynchronous=True))[0])

    def info(self) -> JobInfo:
        return self._typed(job_info(self.id, self.queue, config.client(self.connection).status(self.queue, self.id, progress=True)))

    async def info_async(self) -> JobInfo:
        return self._typed(job_info(self.id, self.queue,
                                    await config.client(self.connection).status(self.queue, self.id, progress=True, asynchronous=True)))

    def _typed(self, info: JobInfo) -> JobInfo:
        if info.result is None or self.job_class is None or self.job_class._result_schema is None:
            return info
        return dataclasses.replace(info, result=self._result(info.result))

    def _result(self, value: Any) -> Any:
        """A stored result as the job class declares it (schemas.py), or as JSON gave it."""
        if value is None or self.job_class is None or self.job_class._result_schema is None:
            return value
        load = schemas.result_loader(self.job_class._result_schema)
        assert load is not None
        return load(value)

    def progress(self) -> feedback.Progress | None:
        """The last progress the job reported (``self.progress(value, **data)`` in its
        handler): ``Progress(value, data, at)``, or None when it reported none (or its record
        expired: ``max(result_ttl, 1 day)`` after the last report)."""
        return feedback.parse_progress(config.client(self.connection).progress(self.queue, self.id))

    async def progress_async(self) -> feedback.Progress | None:
        return feedback.parse_progress(await config.client(self.connection).progress(self.queue, self.id, asynchronous=True))

    def logs(self, start: int = 0, limit: int = 100) -> list[feedback.LogLine]:
        """The job's log lines (``self.log()`` and its level helpers in its handler), oldest
        first: ``limit`` of them from the ``start``-th kept. The newest 1,000 are kept, for
        ``max(result_ttl, 1 day)`` after the last one was written."""
        start, limit = feedback.check_range(start, limit)
        return [feedback.parse_log(b) for b in config.client(self.connection).logs(self.queue, self.id, start, limit)]

    async def logs_async(self, start: int = 0, limit: int = 100) -> list[feedback.LogLine]:
        start, limit = feedback.check_range(start, limit)
        lines = await config.client(self.connection).logs(self.queue, self.id, start, limit, asynchronous=True)
        return [feedback.parse_log(b) for b in lines]

    def callback_status(self) -> CallbackStatus | None:
        """How the job's callback went (``callback()`` or ``failure_callback()``): retrying,
        delivered or failed, with the attempts and the last answer; None before the worker
        posted it (or when the job has none, or its record expired: kept as long as results)."""
        return parse_status(config.client(self.connection).callback_status(self.queue, self.id))

    async def callback_status_async(self) -> CallbackStatus | None:
        return parse_status(await config.client(self.connection).callback_status(self.queue, self.id, asynchronous=True))

    def cancel(self) -> str:
        """Cancels the job (see ``Queue.cancel``); returns the state it was in."""
        from .queue import Queue

        return Queue(self.queue, connection=self.connection).cancel(self.id)

    async def cancel_async(self) -> str:
        from .queue import Queue

        return await Queue(self.queue, connection=self.connection).cancel_async(self.id)

    def wait_result(self, timeout: float | None = None) -> R:
        """Blocks until the job finishes; returns its result, raises ``JobFailed`` if it failed
        for good, ``JobCancelled`` if it was cancelled, ``TimeoutError`` after ``timeout``
        seconds, ``UnknownJobError`` if no such job exists. Woken by Redis pub/sub: no polling."""
        st = config.client(self.connection).wait_result(self.queue, self.id, check_wait_timeout(timeout))
        return self._result(_outcome(self.id, self.queue, st, timeout))  # type: ignore[no-any-return]

    async def wait_result_async(self, timeout: float | None = None) -> R:
        st = await config.client(self.connection).wait_result(self.queue, self.id, check_wait_timeout(timeout), asynchronous=True)
        return self._result(_outcome(self.id, self.queue, st, timeout))  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} queue={self.queue!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and (self.id, self.queue, self.connection) == (other.id, other.queue, other.connection)

    def __hash__(self) -> int:
        return hash((self.id, self.queue, self.connection))
