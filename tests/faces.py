"""The sync and async faces of the API behind one interface, so one test body covers both."""

from __future__ import annotations

import asyncio
from typing import Any

import fastjobs


class Sync:
    name = "sync"

    def send(self, builder: fastjobs.PendingDispatch[Any]) -> fastjobs.JobHandle[Any]:
        return builder.send()

    def wait(self, handle: fastjobs.JobHandle[Any], timeout: float | None = 10.0) -> Any:
        return handle.wait_result(timeout=timeout)

    def status(self, handle: fastjobs.JobHandle[Any]) -> str:
        return handle.status()

    def info(self, handle: fastjobs.JobHandle[Any]) -> fastjobs.JobInfo:
        return handle.info()

    def counts(self, q: fastjobs.Queue) -> dict[str, int]:
        return q.counts()

    def size(self, q: fastjobs.Queue) -> int:
        return q.size()

    def get_job(self, q: fastjobs.Queue, job_id: str) -> fastjobs.JobInfo | None:
        return q.get_job(job_id)

    def failed(self, q: fastjobs.Queue) -> list[fastjobs.FailedJob]:
        return q.failed()

    def retry_failed(self, q: fastjobs.Queue) -> int:
        return q.retry_failed()

    def purge_failed(self, q: fastjobs.Queue) -> int:
        return q.purge_failed()


class Async:
    name = "async"

    def _run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def send(self, builder: fastjobs.PendingDispatch[Any]) -> fastjobs.JobHandle[Any]:
        async def go() -> fastjobs.JobHandle[Any]:
            return await builder

        return self._run(go())

    def wait(self, handle: fastjobs.JobHandle[Any], timeout: float | None = 10.0) -> Any:
        return self._run(handle.wait_result_async(timeout=timeout))

    def status(self, handle: fastjobs.JobHandle[Any]) -> str:
        return self._run(handle.status_async())

    def info(self, handle: fastjobs.JobHandle[Any]) -> fastjobs.JobInfo:
        return self._run(handle.info_async())

    def counts(self, q: fastjobs.Queue) -> dict[str, int]:
        return self._run(q.counts_async())

    def size(self, q: fastjobs.Queue) -> int:
        return self._run(q.size_async())

    def get_job(self, q: fastjobs.Queue, job_id: str) -> fastjobs.JobInfo | None:
        return self._run(q.get_job_async(job_id))

    def failed(self, q: fastjobs.Queue) -> list[fastjobs.FailedJob]:
        return self._run(q.failed_async())

    def retry_failed(self, q: fastjobs.Queue) -> int:
        return self._run(q.retry_failed_async())

    def purge_failed(self, q: fastjobs.Queue) -> int:
        return self._run(q.purge_failed_async())
