"""Hooks and middleware a worker process registers at import (`fastjobs worker tests.apps.hook_jobs`).
Not imported by the test process: its middleware would wrap every worker there. Each hook and
the middleware append a line to the test's stamps list, so the test reads what ran in the worker."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import fastjobs

from .jobs import _stamps


def _record(line: str) -> None:
    redis, key = _stamps()
    redis("RPUSH", key, line)


@fastjobs.hook
def record_complete(job: fastjobs.Job[Any, Any], result: Any) -> None:
    _record(f"complete {job.job_id} {result!r} {os.getpid()}")


@fastjobs.hook("hook-jobs:failure")
def record_failure(job: fastjobs.Job[Any, Any], error: BaseException) -> None:
    _record(f"failure {job.job_id} {type(error).__name__}:{error}")


@fastjobs.hook
async def record_retry(job: fastjobs.Job[Any, Any], error: BaseException, delay: float) -> None:
    _record(f"retry {job.job_id} attempt={job.attempt} {delay:g}")


@fastjobs.middleware
@contextlib.contextmanager
def traced(job: fastjobs.Job[Any, Any]) -> Iterator[None]:
    _record(f"enter {job.job_id}")
    try:
        yield
    except Exception as e:
        _record(f"raised {job.job_id} {type(e).__name__}")
        raise
    _record(f"exit {job.job_id}")

