"""Timeouts: what a job that runs past its timeout is told."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue


class PastItsTimeSync(fastjobs.Job[float, str]):
    timeout = 0.3

    def process(self, payload: float) -> str:
        deadline = time.monotonic() + payload
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except fastjobs.JobTimeoutError as e:
            if payload > 100:  # the handler sees the message too
                return f"caught: {e}"
            raise
        return "finished"


class PastItsTimeAsync(fastjobs.Job[float, str]):
    timeout = 0.3

    async def process(self, payload: float) -> str:
        await asyncio.sleep(payload)
        return "finished"


@pytest.mark.parametrize("job", [PastItsTimeSync, PastItsTimeAsync])
def test_job_timeout_error_says_the_limit_and_the_job(job: Any, start_worker: Any) -> None:
    start_worker(jobs=[job])
    h = job.dispatch(3.0).send()
    with pytest.raises(fastjobs.JobFailed) as e:
        h.wait_result(timeout=10)
    expected = f"job {h.id} ({job.name}) ran past its timeout of 0.3 s"
    assert e.value.exc_type == "fastjobs.errors.JobTimeoutError"
    assert e.value.message == expected
    [failed] = Queue().failed()
    assert failed.error is not None and failed.error["message"] == expected
    h2 = job.dispatch(1.0).timeout(0.2).send()  # a per-dispatch timeout
    with pytest.raises(fastjobs.JobFailed, match=r"ran past its timeout of 0\.2 s"):
        h2.wait_result(timeout=10)


def test_a_sync_handler_catching_the_timeout_sees_the_message(start_worker: Any) -> None:
    start_worker(jobs=[PastItsTimeSync])
    h = PastItsTimeSync.dispatch(1000.0).send()
    result = h.wait_result(timeout=10)
    assert result == f"caught: job {h.id} (PastItsTimeSync) ran past its timeout of 0.3 s"
