"""Bulk fan-out: ``Job.dispatch_many(payloads)`` (one job class, shared options, any
iterable) and ``BulkDispatcher([builders])`` (mixed classes, queues and options)."""

from __future__ import annotations

import bisect
import itertools
import math
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import config, serde, tracing
from .dispatch import _DEDUP_FIELDS, JobHandle, PendingDispatch
from .errors import FastJobsError, PayloadValidationError
from .options import check_dedup_key, check_group_key
from .schemas import check_payload

if TYPE_CHECKING:
    from .job import Job

__all__ = ["BulkResult", "BulkDispatcher", "BulkDispatchError", "dispatch_many"]

Progress = None | bool | Callable[[int, int | None], None]

T = TypeVar("T")

#: Payloads per chunk: one pass of the engine's serializer, ~1 MB on the wire for small payloads.
CHUNK = 10_000


class BulkResult(Sequence[str]):
    """The jobs of a bulk dispatch: ``len()`` (or ``.count``) and their ids, made on demand
    from runs of consecutive ids, so a million jobs cost a few bytes here."""

    def __init__(self, queue: str | None, connection: str, ranges: Sequence[tuple[str, int, int]] = (),
                 handles: list[JobHandle[Any]] | None = None, job_class: type[Job[Any, Any]] | None = None) -> None:
        self.queue = queue
        #: dispatch_many's job class: its handles give a declared result type back as that type.
        self.job_class = job_class
        self.connection = connection
        self._ranges = [r for r in ranges if r[2] > 0]
        self._handles = handles
        self._starts = list(itertools.accumulate((r[2] for r in self._ranges), initial=0))

    @property
    def count(self) -> int:  # type: ignore[override]  # the documented property, in place of Sequence.count(value)
        return len(self._handles) if self._handles is not None else self._starts[-1]

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("bulk result index out of range")
        if self._handles is not None:
            return self._handles[i].id
        k = bisect.bisect_right(self._starts, i) - 1
        producer, first, _ = self._ranges[k]
        return f"{producer}-{first + i - self._starts[k]}"

    def __iter__(self) -> Iterator[str]:
        if self._handles is not None:
            yield from (h.id for h in self._handles)
            return
        for producer, first, count in self._ranges:
            for seq in range(first, first + count):
                yield f"{producer}-{seq}"

    def handle(self, i: int) -> JobHandle[Any]:
        """The handle of job ``i`` (to wait for its result or read its state)."""
        if self._handles is not None:
            return self._handles[i]
        assert self.queue is not None
        return JobHandle(self[i], self.queue, self.connection, job_class=self.job_class)

    def handles(self) -> list[JobHandle[Any]]:
        return [self.handle(i) for i in range(len(self))]

    def __repr__(self) -> str:
        return f"<BulkResult {self.count} jobs queue={self.queue!r}>"


class BulkDispatchError(FastJobsError):
    """A bulk dispatch stopped part way. Every job is in exactly one of three groups:

    - ``result`` (``committed`` of them): in Redis, and they stay queued;
    - ``unknown``: their write went out but its answer was lost (the connection broke or
      Redis did not answer in time), and Redis could not be asked afterwards whether it
      landed: they are in Redis or not;
    - ``unsent``: never written (a write before them failed).

    ``resend()`` (or ``await resend_async()``) writes the unknown and unsent jobs, under the
    same ids: a write that had landed is not repeated, so no job is duplicated; it returns
    every job of the dispatch, or raises this error again (with the groups brought up to
    date). The cause is chained (``__cause__``)."""

    def __init__(self, message: str, result: BulkResult, unknown: BulkResult | None = None,
                 unsent: BulkResult | None = None, resend: Any = None) -> None:
        self.result = result
        self.committed = result.count
        self.unknown = unknown if unknown is not None else BulkResult(result.queue, result.connection)
        self.unsent = unsent if unsent is not None else BulkResult(result.queue, result.connection)
        self._resend = resend
        tail = f"; {self.committed} job(s) committed (they stay queued)"
        if self.unknown.count:
            tail += f", {self.unknown.count} unknown (the answer to their write was lost)"
        if self.unsent.count:
            tail += f", {self.unsent.count} not sent"
        if self.unknown.count or self.unsent.count:
            tail += "; resend() writes them without duplicating any"
        super().__init__(message + tail)

    def resend(self) -> BulkResult:
        """Writes the unknown and unsent jobs; returns every job of the dispatch."""
        if self._resend is None:
            return self.result
        return self._resend(False)  # type: ignore[no-any-return]

    async def resend_async(self) -> BulkResult:
        """``resend()`` for async code."""
        if self._resend is None:
            return self.result
        return await self._resend(True)  # type: ignore[no-any-return]


class _Bar:
    """A one-line progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()

    def __call__(self, done: int, total: int | None) -> None:
        if not self.on:
            return
        if total:
            filled = int(30 * done / total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,}")
        else:
            sys.stderr.write(f"\r{done:,} jobs")
        if total is not None and done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _progress(progress: Progress) -> Callable[[int, int | None], None] | None:
    if progress is True:
        return _Bar()
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise ValueError("progress must be a callable(done, total), True for a terminal progress bar, or None")
    return progress


def _template(job_class: type[Job[Any, Any]], options: dict[str, Any]) -> PendingDispatch[Any]:
    if "job_id" in options:
        raise ValueError("job_id cannot be shared by many jobs: dispatch jobs with their own ids one by one or with BulkDispatcher")
    t = PendingDispatch(job_class, None)
    t._sent = 2  # a template of options, never sent: no unsent warning
    for name, value in options.items():
        if name == "_trace":  # tracing on: the bulk span's context (_traced)
            t._trace = value
        elif name == "connection":
            t.on_connection(value)
        else:
            t.with_(name, value)
    return t


def _chunks(payloads: Iterable[Any], size: int) -> Iterator[tuple[list[Any], int, int]]:
    """Chunks as (list, start, stop): a list is handed over whole with each chunk's bounds
    (no copy); anything else in lists of its own."""
    if isinstance(payloads, list):
        for i in range(0, len(payloads), size):
            yield payloads, i, min(i + size, len(payloads))
        return
    it = iter(payloads)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk, 0, len(chunk)


def _run(job_class: type[Job[Any, Any]], payloads: Iterable[Any], options: dict[str, Any], progress: Progress,
         chunk_size: int) -> Generator[Any, Any, BulkResult]:
    """The body of dispatch_many, shared by its sync and async faces: it yields the writer's
    ``send`` calls, which the face either returns or awaits."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    dedup = _dedup_option(options)
    group = options.pop("group", None)
    if dedup is not None or group is not None:
        return (yield from _run_keyed(job_class, payloads, options, dedup, group, progress, chunk_size))
    t = _template(job_class, options)
    report = _progress(progress)
    client = config.client(t._connection)
    whole = isinstance(payloads, (list, tuple))
    total = len(payloads) if whole else (len(payloads) if hasattr(payloads, "__len__") else None)  # type: ignore[arg-type]
    writer = client.bulk_writer(t._queue, job_class.name, attempts=t._attempts, priority=t._priority,
                                options=t._options_json(), delay_us=math.ceil(t._delay * 1_000_000), at_us=t._at_us())

    def result() -> BulkResult:
        return BulkResult(t._queue, t._connection, writer.committed_ranges(), job_class=job_class)

    def failure(cause: Exception) -> BulkDispatchError:
        err = BulkDispatchError(f"bulk dispatch of {job_class.name!r} failed: {cause}", result(),
                                BulkResult(t._queue, t._connection, writer.unknown_ranges()),
                                BulkResult(t._queue, t._connection, writer.unsent_ranges()), resend)
        err.__cause__ = cause
        return err

    def resend(asynchronous: bool) -> Any:
        if not asynchronous:
            try:
                writer.resend()
            except Exception as e:
                raise failure(e) from e
            return result()

        async def resend_async() -> BulkResult:
            try:
                await writer.resend(asynchronous=True)
            except Exception as e:
                raise failure(e) from e
            return result()

        return resend_async()

    if total == 0:
        return result()
    if job_class._payload_schema is not None:
        # Typed payloads: each checked and turned into its JSON form before it is staged. A
        # list is checked whole here (nothing written if one fails); an iterator as consumed.
        payloads = list(_checked(job_class, payloads)) if whole else _checked(job_class, payloads)
    done = 0
    if whole:
        # A list is all or nothing: everything is validated and packed before the first write.
        index = 0
        for chunk, start, stop in _chunks(payloads, chunk_size):
            writer.stage_payloads(chunk, start, stop, index, serde.dumps_other)
            index += stop - start
    index = 0
    try:
        if whole:
            done = yield writer.send
            if report:
                report(done, total)
        else:
            for chunk, start, stop in _chunks(payloads, chunk_size):
                writer.stage_payloads(chunk, start, stop, index, serde.dumps_other)
                index += stop - start
                done = yield writer.send
                if report:
                    report(done, total)
        done = yield lambda **kw: writer.send(wait_all=True, **kw)
    except Exception as e:
        # Wait for every write still in flight (a failed send has waited already), so that
        # each job's group below is final; nothing more is sent after a failure.
        try:
            yield lambda **kw: writer.send(wait_all=True, **kw)
        except Exception:
            pass  # the first error is the one to report
        raise failure(e) from e
    if report:
        report(done, total if total is not None else done)
    return result()


def _checked(job_class: type[Job[Any, Any]], payloads: Iterable[Any]) -> Iterator[Any]:
    """The JSON forms of typed payloads; ``PayloadValidationError`` names the failing index."""
    schema = job_class._payload_schema
    for i, p in enumerate(payloads):
        try:
            yield check_payload(job_class.name, schema, p)
        except PayloadValidationError as e:
            raise PayloadValidationError(f"payload at index {i}: {e}", e.job, e.path) from None


def _dedup_option(options: dict[str, Any]) -> tuple[str, Any, dict[str, Any]] | None:
    """Takes ``deduplicate=`` or ``debounce=`` out of dispatch_many's options: (mode, key or
    key function, the mode's other settings)."""
    given = [name for name in _DEDUP_FIELDS if name in options]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError("deduplicate and debounce are two deduplication modes: give a dispatch one of them")
    name = given[0]
    value = options.pop(name)
    fields = _DEDUP_FIELDS[name]
    if isinstance(value, Mapping):
        unknown = set(value) - fields
        if unknown or "key" not in value:
            raise ValueError(f"{name} takes a dict with {' and '.join(sorted(fields))}"
                             f"{f'; unknown: {sorted(unknown)}' if unknown else ''}")
        extra = {k: v for k, v in value.items() if k != "key"}
        key = value["key"]
    elif name == "debounce":
        raise ValueError("debounce takes a dict with key and delay, e.g. debounce={'key': 'k', 'delay': '2s'}")
    else:
        key, extra = value, {}
    if name == "debounce" and "delay" not in extra:
        raise ValueError("debounce takes a dict with key and delay, e.g. debounce={'key': 'k', 'delay': '2s'}")
    return name, key, extra


def _run_keyed(job_class: type[Job[Any, Any]], payloads: Iterable[Any], options: dict[str, Any],
               dedup: tuple[str, Any, dict[str, Any]] | None, group: Any, progress: Progress,
               chunk_size: int) -> Generator[Any, Any, BulkResult]:
    """dispatch_many with a deduplication key or a group (each a str, or a function of the
    payload): every payload is checked and packed first, then written through the general
    script in batches of at most 1,000 (one atomic call each, in order), as a BulkDispatcher
    writes; duplicates inside the dispatch meet the marks their predecessors took, and grouped
    jobs go to their groups' lists."""
    t = _template(job_class, options)
    keyed, mode, ms = False, "", 0
    key: Any = None
    if dedup is not None:
        name, key, extra = dedup
        keyed = callable(key)
        getattr(t, name)("-" if keyed else key, **extra)  # the mode's own checks, once
        assert t._dedup is not None
        mode, _, ms = t._dedup
    group_keyed = callable(group)
    if group is not None and not group_keyed:
        t.group(group)  # checked once
    report = _progress(progress)
    jobs: list[Any] = []
    specs: list[tuple[str, str, int] | None] = []
    for i, p in enumerate(payloads):
        try:
            if dedup is not None:
                k = check_dedup_key(key(p), "deduplication key returned by the key function") if keyed else key
                t._dedup = (mode, k, ms)
            if group_keyed:
                t._group = check_group_key(group(p), "group returned by the group function")
            t.payload = p
            jobs.append(t._job_tuple())
        except (TypeError, ValueError) as e:
            raise type(e)(f"payload at index {i}: {e}") from None
        specs.append(t._dedup)
    if not jobs:
        return BulkResult(t._queue, t._connection, handles=[])
    batches = _prepare([(t._connection, t._queue, list(range(len(jobs))), jobs, specs)],
                       min(chunk_size, BulkDispatcher.BATCH))
    result = yield from BulkDispatcher._write(batches, [False] * len(batches), [None] * len(jobs))
    if report:
        report(len(jobs), len(jobs))
    handles = [result.handle(i) for i in range(len(result))]
    for h in handles:
        h.job_class = job_class
    return BulkResult(t._queue, t._connection, handles=handles, job_class=job_class)


def _drive(gen: Generator[Any, Any, T]) -> T:
    """Runs a bulk body's generator on the sync face: each yielded call runs blocking."""
    try:
        call = next(gen)
        while True:
            try:
                value = call()
            except BaseException as e:
                call = gen.throw(e)
            else:
                call = gen.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _drive_async(gen: Generator[Any, Any, T]) -> T:
    """Runs a bulk body's generator on the async face: each yielded call is awaited."""
    try:
        call = next(gen)
        while True:
            try:
                value = await call(asynchronous=True)
            except BaseException as e:
                call = gen.throw(e)
            else:
                call = gen.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _traced(job_class: type[Job[Any, Any]], payloads: Iterable[Any], options: dict[str, Any], progress: Progress,
            chunk_size: int) -> Generator[Any, Any, BulkResult]:
    """``_run`` inside one PRODUCER span for the whole call (tracing on): every job carries
    its context."""
    queue = options.get("queue", job_class.queue)
    span, options["_trace"] = tracing.producer(job_class.name, queue, len(payloads) if isinstance(payloads, (list, tuple)) else None)
    try:
        result = yield from _run(job_class, payloads, options, progress, chunk_size)
    except BaseException as e:
        tracing.end(span, error=e)
        raise
    span.set_attribute("messaging.batch.message_count", len(result))
    tracing.end(span)
    return result


def dispatch_many(job_class: type[Job[Any, Any]], payloads: Iterable[Any], *, progress: Progress = None,
                  chunk_size: int = CHUNK, **options: Any) -> BulkResult:
    return _drive((_traced if tracing.on else _run)(job_class, payloads, options, progress, chunk_size))


async def dispatch_many_async(job_class: type[Job[Any, Any]], payloads: Iterable[Any], *, progress: Progress = None,
                              chunk_size: int = CHUNK, **options: Any) -> BulkResult:
    return await _drive_async((_traced if tracing.on else _run)(job_class, payloads, options, progress, chunk_size))


def _prepare(plan: list[tuple[str, str, list[int], list[Any], list[Any]]], size: int) -> list[tuple[str, str, list[int], Any]]:
    """Groups of (connection, queue, indexes, job tuples, deduplications) in prepared batches of
    at most ``size`` jobs: packed, ids given, nothing written yet."""
    out = []
    for conn, queue, idx, jobs, dedup in plan:
        client = config.client(conn)
        any_dedup = any(d is not None for d in dedup)
        for s in range(0, len(jobs), size):
            out.append((conn, queue, idx[s : s + size],
                        client.prepare_batch(queue, jobs[s : s + size], dedup=dedup[s : s + size] if any_dedup else None)))
    return out


class BulkDispatcher:
    """Dispatches many builders at once, of any job classes, queues and options
    (``new BulkDispatcher([...]).dispatch()`` in JavaScript queues). Every builder is validated and serialized
    before the first write; jobs of one queue go in batched writes, in the given order."""

    BATCH = 1000

    def __init__(self, builders: Iterable[PendingDispatch[Any]]) -> None:
        self.builders = list(builders)
        for b in self.builders:
            if not isinstance(b, PendingDispatch):
                raise TypeError(f"BulkDispatcher takes dispatch builders (Job.dispatch(...)), got {type(b).__name__}")
        if len({id(b) for b in self.builders}) != len(self.builders):
            raise ValueError("the same builder appears twice in a BulkDispatcher")

    def _plan(self) -> list[tuple[str, str, list[int], list[Any], list[Any]]]:
        """Validates and serializes every builder (raising before any write), grouped by
        connection and queue: (connection, queue, builder indexes, job tuples, deduplications)."""
        if not self.builders:
            raise ValueError("BulkDispatcher needs at least one builder")
        for b in self.builders:
            b._claim()
        groups: dict[tuple[str, str], tuple[list[int], list[Any], list[Any]]] = {}
        try:
            for i, b in enumerate(self.builders):
                try:
                    job = b._job_tuple()
                except (TypeError, ValueError) as e:
                    raise type(e)(f"builder at index {i}: {e}") from None
                idx, jobs, dedup = groups.setdefault((b._connection, b._queue), ([], [], []))
                idx.append(i)
                jobs.append(job)
                dedup.append(b._dedup_spec())
        except BaseException:
            for b in self.builders:
                b._sent = 2
            raise
        return [(conn, queue, idx, jobs, dedup) for (conn, queue), (idx, jobs, dedup) in groups.items()]

    def _batches(self) -> list[tuple[str, str, list[int], Any]]:
        """Every builder validated and serialized (raising before any write), grouped by
        connection and queue, in batches whose ids are fixed before the first write (so a
        batch whose answer was lost can be written again under the same ids)."""
        return _prepare(self._plan(), self.BATCH)

    @staticmethod
    def _write(batches: list[tuple[str, str, list[int], Any]], done: list[bool | None],
               handles: list[JobHandle[Any] | None]) -> Generator[Any, Any, BulkResult]:
        """The writes, shared by both faces (and by ``dispatch_many`` with a deduplication
        option or a group): each batch not yet known to be written (``done``
        per batch: True written, None unknown, False not sent), in order; after a failure,
        asks Redis which of the unknown batches landed, then raises BulkDispatchError."""
        for k, (conn, queue, idx, batch) in enumerate(batches):
            if done[k]:
                continue
            try:
                written = yield batch.send
            except Exception as e:
                done[k] = None
                for j, (_c, _q, _i, other) in enumerate(batches):
                    if done[j] is None:
                        try:
                            landed = yield other.written
                        except Exception:  # noqa: BLE001 - Redis cannot say: the batch stays unknown
                            landed = None
                        if landed:
                            BulkDispatcher._landed(batches[j], handles)
                            done[j] = True
                raise BulkDispatcher._failure(e, batches, done, handles) from e
            for i, (job_id, created, deduplicated) in zip(idx, written):
                handles[i] = JobHandle(job_id, queue, conn, created, deduplicated)
            done[k] = True
        return BulkDispatcher._result(handles)

    @staticmethod
    def _landed(batch: tuple[str, str, list[int], Any], handles: list[JobHandle[Any] | None]) -> None:
        conn, queue, idx, b = batch
        for i, job_id in zip(idx, b.ids()):
            handles[i] = JobHandle(job_id, queue, conn, True)

    @staticmethod
    def _failure(cause: Exception, batches: list[tuple[str, str, list[int], Any]], done: list[bool | None],
                 handles: list[JobHandle[Any] | None]) -> BulkDispatchError:
        def group(state: bool | None) -> BulkResult:
            hs: list[JobHandle[Any]] = [JobHandle(job_id, queue, conn, True)
                  for (conn, queue, _idx, b), d in zip(batches, done) if d is state for job_id in b.ids()]
            return BulkResult(None, "default", handles=hs)

        def resend(asynchronous: bool) -> Any:
            body = BulkDispatcher._write(batches, done, handles)
            return _drive_async(body) if asynchronous else _drive(body)

        return BulkDispatchError(f"bulk dispatch failed: {cause}", BulkDispatcher._result(handles), group(None), group(False), resend)

    @staticmethod
    def _result(handles: list[JobHandle[Any] | None]) -> BulkResult:
        done = [h for h in handles if h is not None]
        return BulkResult(None, "default", handles=done)

    def dispatch(self) -> BulkResult:
        batches = self._batches()  # raises before any write
        handles: list[JobHandle[Any] | None] = [None] * len(self.builders)
        try:
            return _drive(self._write(batches, [False] * len(batches), handles))
        finally:
            self._classes(handles)

    async def dispatch_async(self) -> BulkResult:
        batches = self._batches()  # raises before any write
        handles: list[JobHandle[Any] | None] = [None] * len(self.builders)
        try:
            return await _drive_async(self._write(batches, [False] * len(batches), handles))
        finally:
            self._classes(handles)

    def _classes(self, handles: list[JobHandle[Any] | None]) -> None:
        """Each handle learns its builder's job class (a declared result type comes back typed)."""
        for b, h in zip(self.builders, handles):
            if h is not None:
                h.job_class = b.job_class

    def __await__(self) -> Generator[Any, None, BulkResult]:
        return self.dispatch_async().__await__()
