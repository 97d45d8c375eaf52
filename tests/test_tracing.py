"""OpenTelemetry tracing: a dispatch's PRODUCER span is the parent of the CONSUMER span its
job runs in, in a worker thread; errors are recorded; off, nothing of opentelemetry loads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import fastjobs
from fastjobs import tracing
from tests.apps.metric_jobs import MeteredAsyncTick, MeteredBoom, MeteredFlaky, MeteredTick
from tests.conftest import eventually, waiting_records

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)  # once per process: OpenTelemetry allows no other


@pytest.fixture
def traced(redis: Any) -> Iterator[InMemorySpanExporter]:
    EXPORTER.clear()
    fastjobs.configure(tracing=True)
    yield EXPORTER
    fastjobs.configure(tracing=False)


def spans(exporter: InMemorySpanExporter, name: str, kind: SpanKind) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name and s.kind == kind]


def test_a_job_runs_in_a_child_of_its_dispatch_span(traced: InMemorySpanExporter, start_worker: Any, redis: Any, prefix: str) -> None:
    handle = MeteredTick.dispatch(1).send()
    [sent] = spans(traced, "send MeteredTick", SpanKind.PRODUCER)
    [record] = waiting_records(redis, prefix, "metered")
    assert f'"trace":{{"traceparent":"00-{sent.context.trace_id:032x}-{sent.context.span_id:016x}-{int(sent.context.trace_flags):02x}"}}'.encode() in record
    assert sent.attributes["messaging.system"] == "fastjobs"
    assert sent.attributes["messaging.destination.name"] == "metered"
    assert sent.attributes["messaging.message.id"] == handle.id
    start_worker(queues=["metered"])
    [ran] = eventually(lambda: spans(traced, "process MeteredTick", SpanKind.CONSUMER))
    assert ran.parent is not None and ran.parent.span_id == sent.context.span_id
    assert ran.context.trace_id == sent.context.trace_id
    assert dict(ran.attributes) == {"messaging.system": "fastjobs", "messaging.operation.type": "process",
                                    "messaging.destination.name": "metered", "messaging.message.id": handle.id,
                                    "fastjobs.job.name": "MeteredTick", "fastjobs.job.attempt": 1}
    assert ran.status.status_code == StatusCode.UNSET


def test_errors_are_recorded_on_the_job_span(traced: InMemorySpanExporter, start_worker: Any) -> None:
    MeteredBoom.dispatch(1).send()
    MeteredFlaky.dispatch(1).send()
    start_worker(queues=["metered"])
    [boom] = eventually(lambda: spans(traced, "process MeteredBoom", SpanKind.CONSUMER))
    assert boom.status.status_code == StatusCode.ERROR
    [event] = [e for e in boom.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError" and event.attributes["exception.message"] == "boom"
    runs = eventually(lambda: len(spans(traced, "process MeteredFlaky", SpanKind.CONSUMER)) == 2
                      and spans(traced, "process MeteredFlaky", SpanKind.CONSUMER))
    first, second = sorted(runs, key=lambda s: s.attributes["fastjobs.job.attempt"])
    assert first.status.status_code == StatusCode.ERROR and second.status.status_code == StatusCode.UNSET
    assert first.parent.span_id == second.parent.span_id  # both attempts: children of the one dispatch


def test_a_bulk_dispatch_makes_one_span_for_its_jobs(traced: InMemorySpanExporter, start_worker: Any) -> None:
    MeteredTick.dispatch_many([1, 2, 3])
    MeteredAsyncTick.dispatch(0).send()
    [bulk] = spans(traced, "send MeteredTick", SpanKind.PRODUCER)
    assert bulk.attributes["messaging.batch.message_count"] == 3
    start_worker(queues=["metered"])
    runs = eventually(lambda: len(spans(traced, "process MeteredTick", SpanKind.CONSUMER)) == 3
                      and spans(traced, "process MeteredTick", SpanKind.CONSUMER))
    assert {r.parent.span_id for r in runs} == {bulk.context.span_id}
    [sent] = spans(traced, "send MeteredAsyncTick", SpanKind.PRODUCER)
    [ran] = eventually(lambda: spans(traced, "process MeteredAsyncTick", SpanKind.CONSUMER))
    assert ran.parent.span_id == sent.context.span_id


def test_off_no_options_key_and_no_import(redis: Any, prefix: str) -> None:
    assert not tracing.on
    MeteredTick.dispatch(1).meta({"a": 1}).send()
    [record] = waiting_records(redis, prefix, "metered")
    assert b'"meta"' in record and b"trace" not in record
    code = "import sys, fastjobs, fastjobs.worker, fastjobs.metrics; assert 'opentelemetry' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tracing_takes_a_bool_and_leaves_the_connection_alone(redis: Any) -> None:
    before = fastjobs.config.settings()
    with pytest.raises(TypeError, match="tracing must be True or False"):
        fastjobs.configure(tracing="yes")  # type: ignore[arg-type]
    assert fastjobs.configure(tracing=False) == before and not tracing.on
