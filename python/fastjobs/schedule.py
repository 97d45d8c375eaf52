"""Recurring jobs: ``JobScheduler`` (schedules kept in Redis, upserted by key) and
``periodic`` (schedules declared in code, registered when a worker starts).

Every worker process drives the schedules (the engine's schedule driver): each tick becomes
exactly one job, with the id ``<key>@<tick ms>``, whatever the number of workers. A tick that
fell due while no worker ran is not replayed one by one: the schedule runs once when a worker
is back, then resumes on its timetable.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from . import _core, config, serde
from .dispatch import _ABANDONED
from .job import FunctionJob, Job, registry
from .options import MAX_DURATION, due_time_us, seconds_of

__all__ = ["JobScheduler", "ScheduleInfo", "periodic", "periodic_schedules"]

JobRef = type[Job[Any, Any]] | FunctionJob[Any, Any] | str

_REPEAT_KEYS = frozenset({"pattern", "every", "tz", "start", "end", "limit", "immediately"})
#: Options a schedule may set on the jobs it creates (timing belongs to `repeat`).
_SCHEDULE_OPTIONS = frozenset({"attempts", "backoff", "timeout", "priority", "meta"})
#: Runs are counted in Lua, whose numbers are exact to 2**53.
_MAX_LIMIT = 2**53


@dataclass(frozen=True)
class ScheduleInfo:
    """A stored schedule. ``next_run`` is when its next job will be created."""

    key: str
    job: str
    queue: str
    data: Any
    repeat: dict[str, Any]
    next_run: datetime
    runs: int = 0
    last_run: datetime | None = None
    last_job_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    origin: str = "api"


def _job_class(job: JobRef) -> type[Job[Any, Any]]:
    if isinstance(job, FunctionJob):
        return job.job_class
    if isinstance(job, type) and issubclass(job, Job):
        return job
    if isinstance(job, str):
        found = registry().get(job)
        if found is None:
            raise ValueError(f"no job named {job!r} is registered; pass the job class or import its module first")
        return found
    raise ValueError(f"job must be a Job class, an @job function or a registered job name, got {job!r}")


def _ms(when: datetime, what: str) -> int:
    """ms since the epoch of a schedule's ``start``/``end`` (naive: UTC, as everywhere in
    fastjobs); later than 9999-12-31 UTC raises ``ValueError``."""
    if not isinstance(when, datetime):
        raise ValueError(f"repeat {what!r} must be a datetime, got {type(when).__name__}")
    return due_time_us(when, f"repeat {what!r}") // 1000


def _every_ms(value: Any) -> int:
    """``every``: milliseconds as a number (as BullMQ), a timedelta, or a string like '15s';
    1 ms to 100 years."""
    if isinstance(value, bool):
        raise ValueError(f"repeat 'every' must be milliseconds, a timedelta or a string like '15s', got {value!r}")
    if isinstance(value, (int, float)):
        ms = seconds_of(value, "repeat 'every'")  # a number of ms here: no unit to apply
    elif isinstance(value, (timedelta, str)):
        ms = seconds_of(value, "repeat 'every'") * 1000
    else:
        raise ValueError(f"repeat 'every' must be milliseconds, a timedelta or a string like '15s', got {type(value).__name__}")
    if not 1 <= ms <= MAX_DURATION * 1000:  # NaN fails too
        shown = f"{value!r} ms" if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"repeat 'every' must be a positive duration between 1 ms and 100 years ({MAX_DURATION * 1000:.0f} ms), got {shown}")
    return int(ms)


def _timing(repeat: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the engine's upsert for a ``repeat`` mapping."""
    if not isinstance(repeat, Mapping):
        raise ValueError(f"repeat must be a mapping like {{'pattern': '0 * * * *'}} or {{'every': '15s'}}, got {type(repeat).__name__}")
    unknown = set(repeat) - _REPEAT_KEYS
    if unknown:
        raise ValueError(f"unknown repeat option(s) {sorted(unknown)}; known: {sorted(_REPEAT_KEYS)}")
    has_pattern, has_every = repeat.get("pattern") is not None, repeat.get("every") is not None
    if has_pattern == has_every:
        raise ValueError("repeat needs exactly one of 'pattern' (a cron pattern) and 'every' (an interval)")
    out: dict[str, Any] = {}
    if has_pattern:
        pattern, tz = repeat["pattern"], repeat.get("tz", "UTC")
        if not isinstance(pattern, str) or not isinstance(tz, str):
            raise ValueError("repeat 'pattern' and 'tz' must be strings")
        _core.cron_next(pattern, tz)  # ValueError naming the bad field, or the unknown zone
        out.update(pattern=pattern.strip(), tz=tz)
    else:
        if "tz" in repeat:
            raise ValueError("repeat 'tz' applies to cron patterns only, not to 'every'")
        out["every_ms"] = _every_ms(repeat["every"])
    if repeat.get("start") is not None:
        out["start_ms"] = _ms(repeat["start"], "start")
    if repeat.get("end") is not None:
        out["end_ms"] = _ms(repeat["end"], "end")
    limit = repeat.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
            raise ValueError(f"repeat 'limit' must be a whole number of runs from 1 to 2**53, got {limit!r}")
        out["limit"] = limit
    out["immediately"] = bool(repeat.get("immediately", False))
    return out


def _definition(job: JobRef, data: Any, queue: str | None, options: Mapping[str, Any] | None, origin: str) -> list[tuple[str, bytes]]:
    """The stored fields of the jobs a schedule creates, validated as a dispatch would be."""
    cls = _job_class(job)
    options = dict(options or {})
    unknown = set(options) - _SCHEDULE_OPTIONS
    if unknown:
        raise ValueError(f"unknown or unschedulable option(s) {sorted(unknown)}; a schedule's jobs take {sorted(_SCHEDULE_OPTIONS)} "
                         "(timing goes in repeat, the queue in queue=)")
    pending = cls.dispatch(data)
    try:
        if queue is not None:
            pending.on_queue(queue)
        for name, value in options.items():
            pending.with_(name, value)
        name, payload, opts, attempts, priority, _delay, _id, _at = pending._job_tuple()
        target = pending._queue
    finally:
        pending._sent = _ABANDONED  # a template, never sent: no unsent warning
    fields = [("job", name.encode()), ("queue", target.encode()), ("payload", payload), ("attempts", str(attempts).encode()),
              ("priority", str(priority).encode()), ("origin", origin.encode())]
    if opts:
        fields.append(("options", opts))
    return fields


def _when(ms: bytes | None) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc) if ms else None


def _info(entry: tuple[str, int, dict[str, bytes]]) -> ScheduleInfo:
    key, next_ms, f = entry
    text = {k: v.decode("utf-8", "replace") for k, v in f.items() if k not in ("payload", "options")}
    repeat: dict[str, Any] = {}
    if "pattern" in text:
        repeat.update(pattern=text["pattern"], tz=text.get("tz", "UTC"))
    else:
        repeat["every"] = int(text.get("every_ms", "0"))
    for name in ("start", "end"):
        if f"{name}_ms" in text:
            repeat[name] = _when(f[f"{name}_ms"])
    if "limit" in text:
        repeat["limit"] = int(text["limit"])
    if text.get("immediately") == "1":
        repeat["immediately"] = True
    return ScheduleInfo(
        key=key,
        job=text.get("job", ""),
        queue=text.get("queue", ""),
        data=serde.loads(f["payload"]) if "payload" in f else None,
        repeat=repeat,
        next_run=datetime.fromtimestamp(next_ms / 1000, timezone.utc),
        runs=int(text.get("runs", "0")),
        last_run=_when(f.get("last_run_ms")),
        last_job_id=text.get("last_job_id"),
        options=serde.loads(f["options"]) if f.get("options") else {},
        origin=text.get("origin", "api"),
    )


def _book(connection: str) -> _core.Schedules:
    return _core.Schedules(config.client(connection))


class JobScheduler:
    """Schedules kept in Redis. Each is upserted by ``key``: scheduling the same key again
    updates its job, data, options and timing, without a duplicate or a lost tick (a timing
    that did not change keeps its next run).

    ``repeat`` is ``{"pattern": "<cron>", "tz": "Europe/Paris"}`` (5 fields, or 6 with leading
    seconds; names, lists, ranges, steps and ``@daily``-style macros) or ``{"every": 15000}``
    (milliseconds, a timedelta or ``"15s"``), optionally with ``start``/``end`` datetimes, a
    ``limit`` on the number of runs and ``immediately=True`` for a first run at once.
    """

    @staticmethod
    def _upsert_args(key: str, job: JobRef, data: Any, repeat: Mapping[str, Any], queue: str | None,
                     options: Mapping[str, Any] | None, origin: str) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        if not isinstance(key, str):
            raise ValueError(f"schedule key must be a string, got {type(key).__name__}")
        return _definition(job, data, queue, options, origin), _timing(repeat)

    @classmethod
    def schedule(cls, *, key: str, job: JobRef, repeat: Mapping[str, Any], data: Any = None, queue: str | None = None,
                 options: Mapping[str, Any] | None = None, connection: str = "default") -> ScheduleInfo:
        """Creates or updates the schedule ``key``; returns it with its next run."""
        fields, timing = cls._upsert_args(key, job, data, repeat, queue, options, "api")
        _book(connection).upsert(key, fields, **timing)
        return cls._found(key, connection)

    @classmethod
    async def schedule_async(cls, *, key: str, job: JobRef, repeat: Mapping[str, Any], data: Any = None, queue: str | None = None,
                             options: Mapping[str, Any] | None = None, connection: str = "default") -> ScheduleInfo:
        fields, timing = cls._upsert_args(key, job, data, repeat, queue, options, "api")
        book = _book(connection)
        await book.upsert(key, fields, **timing, asynchronous=True)
        found = await book.read([key], asynchronous=True)
        if not found:
            raise KeyError(f"schedule {key!r} was removed while being written")
        return _info(found[0])

    @classmethod
    def _found(cls, key: str, connection: str) -> ScheduleInfo:
        found = cls.find(key, connection=connection)
        if found is None:
            raise KeyError(f"schedule {key!r} was removed while being written")
        return found

    @staticmethod
    def find(key: str, *, connection: str = "default") -> ScheduleInfo | None:
        found = _book(connection).read([key])
        return _info(found[0]) if found else None

    @staticmethod
    async def find_async(key: str, *, connection: str = "default") -> ScheduleInfo | None:
        found = await _book(connection).read([key], asynchronous=True)
        return _info(found[0]) if found else None

    @staticmethod
    def exists(key: str, *, connection: str = "default") -> bool:
        return bool(_book(connection).read([key]))

    @staticmethod
    async def exists_async(key: str, *, connection: str = "default") -> bool:
        return bool(await _book(connection).read([key], asynchronous=True))

    @staticmethod
    def list(*, connection: str = "default") -> list[ScheduleInfo]:
        """Every schedule, soonest next run first."""
        return [_info(e) for e in _book(connection).read()]

    @staticmethod
    async def list_async(*, connection: str = "default") -> builtins.list[ScheduleInfo]:  # `list` here is the method above
        return [_info(e) for e in await _book(connection).read(asynchronous=True)]

    @staticmethod
    def remove(key: str, *, connection: str = "default") -> bool:
        """Removes a schedule (jobs its past ticks created stay); False if there was none."""
        return bool(_book(connection).remove([key]))

    @staticmethod
    async def remove_async(key: str, *, connection: str = "default") -> bool:
        return bool(await _book(connection).remove([key], asynchronous=True))

    @staticmethod
    def clear(*, connection: str = "default") -> int:
        """Removes every schedule; returns how many there were."""
        return int(_book(connection).remove())

    @staticmethod
    async def clear_async(*, connection: str = "default") -> int:
        return int(await _book(connection).remove(asynchronous=True))


# ---- schedules declared in code ----


@dataclass(frozen=True)
class _Declaration:
    key: str
    job: type[Job[Any, Any]]
    repeat: dict[str, Any]
    data: Any
    options: dict[str, Any]


_DECLARED: dict[str, _Declaration] = {}

T = TypeVar("T")


def periodic(pattern: str | None = None, *, every: Any = None, tz: str = "UTC", key: str | None = None, data: Any = None,
             options: Mapping[str, Any] | None = None, **repeat: Any) -> Callable[[T], T]:
    """Declares a schedule in code, on a job class or an ``@job`` function::

        @periodic("0 3 * * *", tz="Europe/Paris")
        class NightlyReport(Job[None, None]): ...

        @periodic(every="15s")
        @job(queue="metrics")
        def sample(payload): ...

    A worker registers the declarations of the jobs it loads whose queue it consumes when it
    starts (key: ``periodic:<job name>`` unless given), and removes the code-declared schedules
    of those queues that its code no longer declares. The declaration is checked at once.
    """
    spec: dict[str, Any] = dict(repeat)
    if pattern is not None:
        spec.update(pattern=pattern, tz=tz)
    elif tz != "UTC":
        spec["tz"] = tz
    if every is not None:
        spec["every"] = every
    _timing(spec)  # bad declarations fail at import, not in the worker

    def declare(target: T) -> T:
        cls = _job_class(target)  # type: ignore[arg-type]
        k = key or f"periodic:{cls.name}"
        _definition(cls, data, None, options, "code")
        if k in _DECLARED and _DECLARED[k].job is not cls:
            raise ValueError(f"schedule key {k!r} is declared twice (by {_DECLARED[k].job.name} and {cls.name}); pass key=")
        _DECLARED[k] = _Declaration(k, cls, spec, data, dict(options or {}))
        return target

    return declare


def periodic_schedules() -> dict[str, _Declaration]:
    """The schedules declared in code so far, by key."""
    return dict(_DECLARED)


def sync_declared(queues: list[str], jobs: Mapping[str, type[Job[Any, Any]]], connection: str = "default") -> int:
    """A worker's start: upserts the declarations of its jobs on its queues, and removes the
    code-declared schedules of its queues that are declared no more. Returns how many it upserted."""
    book = _book(connection)
    mine = {k: d for k, d in _DECLARED.items() if jobs.get(d.job.name) is d.job and d.job.queue in queues}
    for d in mine.values():
        book.upsert(d.key, _definition(d.job, d.data, None, d.options, "code"), **_timing(d.repeat))
    stale = [k for k, _next, f in book.read()
             if f.get("origin") == b"code" and f.get("queue", b"").decode() in queues and k not in mine]
    book.remove(stale)
    return len(mine)
