"""OpenTelemetry tracing, switched on with ``fastjobs.configure(tracing=True)`` (the
``opentelemetry-api`` package: ``pip install 'fastjobs[otel]'``; spans go wherever the
application's tracer provider sends them).

On, a dispatch makes a PRODUCER span ``send <job name>`` and writes its W3C trace context
(``traceparent``, and ``tracestate`` if any) into the job's options (key ``"trace"``,
docs/DATA.md); a bulk dispatch makes one span for the whole call, and its jobs carry that
span's context. A worker with tracing on runs each job inside a CONSUMER span
``process <job name>``, a child of the context the job carries (a root span when it carries
none), with the exception of a failed, retried or cancelled attempt recorded on it.

Off (the default), ``opentelemetry`` is never imported, no options key is written, and the
worker's hot paths are not wrapped: dispatch reads one module flag (``on``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["enable", "is_enabled"]

#: Read by dispatch.py and bulk.py on each dispatch, and by a worker when it starts.
on = False
_tracer: Any = None


def enable(flag: bool) -> None:
    """Tracing on or off for this process (``fastjobs.configure(tracing=...)``)."""
    global on, _tracer
    if not isinstance(flag, bool):
        raise TypeError(f"tracing must be True or False, got {type(flag).__name__}")
    if flag and _tracer is None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ValueError("tracing=True needs the opentelemetry-api package: pip install 'fastjobs[otel]'") from None
        from . import __version__

        _tracer = trace.get_tracer("fastjobs", __version__)
    on = flag


def is_enabled() -> bool:
    return on


def producer(name: str, queue: str, count: int | None = None) -> tuple[Any, dict[str, str]]:
    """A started PRODUCER span for a dispatch of ``name`` to ``queue`` (``count``: the jobs of
    a bulk dispatch, when known), and the trace context the jobs carry."""
    from opentelemetry import propagate, trace

    attributes: dict[str, Any] = {"messaging.system": "fastjobs", "messaging.operation.type": "send",
                                  "messaging.destination.name": queue, "fastjobs.job.name": name}
    if count is not None:
        attributes["messaging.batch.message_count"] = count
    span = _tracer.start_span(f"send {name}", kind=trace.SpanKind.PRODUCER, attributes=attributes)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, carrier


def end(span: Any, job_id: str | None = None, error: BaseException | None = None) -> None:
    if job_id is not None:
        span.set_attribute("messaging.message.id", job_id)
    if error is not None:
        _record(span, error)
    span.end()


def _record(span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def failed(error: BaseException) -> None:
    """Records a job's error on the CONSUMER span it runs in (the worker's ``_outcome_failed``)."""
    from opentelemetry import trace

    _record(trace.get_current_span(), error)


@contextmanager
def consumer(job: tuple[Any, ...]) -> Iterator[Any]:
    """The CONSUMER span a job runs in (current while it runs), a child of the context the job
    carries in its options."""
    from opentelemetry import propagate, trace

    from . import serde
    from .worker import _ATTEMPT, _ID, _NAME, _OPTIONS, _QUEUE

    parent = None
    raw = job[_OPTIONS]
    if raw is not None:
        try:
            carried = serde.loads(raw).get("trace")
        except (ValueError, AttributeError):  # options the worker fails the job for anyway
            carried = None
        if isinstance(carried, dict):
            parent = propagate.extract(carried)
    attributes = {"messaging.system": "fastjobs", "messaging.operation.type": "process", "messaging.destination.name": job[_QUEUE],
                  "messaging.message.id": job[_ID], "fastjobs.job.name": job[_NAME], "fastjobs.job.attempt": job[_ATTEMPT] + 1}
    with _tracer.start_as_current_span(f"process {job[_NAME]}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        yield span


def instrument(worker: Worker) -> None:
    """Wraps the worker's ``_run_sync`` and ``_run_async``: each job inside its CONSUMER span."""
    from .worker import _NAME

    run_sync, run_async, registered = worker._run_sync, worker._run_async, worker.jobs

    def traced_sync(jobs: list[tuple[Any, ...]]) -> None:
        for i, job in enumerate(jobs):
            if worker._stopping:
                run_sync(jobs[i:])  # handed back
                return
            cls = registered.get(job[_NAME])
            if cls is not None and cls._is_async:  # its span is made on the loop
                run_sync([job])
                continue
            with consumer(job):
                run_sync([job])

    async def traced_async(job: tuple[Any, ...]) -> None:
        with consumer(job):
            await run_async(job)

    worker._run_sync = traced_sync  # type: ignore[method-assign]
    worker._run_async = traced_async  # type: ignore[method-assign]
