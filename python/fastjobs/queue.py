"""``Queue``: sizes, state counts, job lookup, and failed-job maintenance of one queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import config, serde
from .dispatch import JobInfo, job_info

__all__ = ["Queue", "FailedJob"]


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    name: str | None
    payload: Any
    attempts: int | None
    failed_at: datetime
    #: {"type", "message", "traceback"} of the last attempt's error
    error: dict[str, Any]


def _failed(queue: str, rows: list[tuple[str, Any, bytes | None, int]]) -> list[FailedJob]:
    out = []
    for job_id, record, error, failed_ms in rows:
        name = payload = attempts = None
        if record is not None:
            name, attempts, _max, _prio, _enq, _opts, raw = record
            try:
                payload = serde.loads(raw)
            except ValueError:
                payload = raw
        out.append(
            FailedJob(
                id=job_id,
                queue=queue,
                name=name,
                payload=payload,
                attempts=attempts,
                failed_at=datetime.fromtimestamp(int(failed_ms) / 1000, timezone.utc),
                error=serde.loads_error(error) if error else {},
            )
        )
    return out


class Queue:
    """One queue on one named connection. Every method has an ``_async`` twin."""

    def __init__(self, name: str = "default", *, connection: str = "default") -> None:
        self.name = name
        self.connection = connection

    @property
    def _client(self) -> Any:
        return config.client(self.connection)

    def size(self) -> int:
        """Jobs waiting to run (all priorities; delayed and running jobs not included)."""
        return int(self.counts()["waiting"])

    async def size_async(self) -> int:
        return int((await self.counts_async())["waiting"])

    def counts(self) -> dict[str, Any]:
        """Jobs per state now (waiting, delayed, active, failed), totals since the queue
        began (completed, retried, stalled), and whether it is ``paused``."""
        return dict(self._client.counts(self.name))

    async def counts_async(self) -> dict[str, Any]:
        return dict(await self._client.counts(self.name, asynchronous=True))

    def pause(self) -> bool:
        """Workers stop taking jobs from this queue at once: they hand back the jobs they
        prefetched and did not start, and let running ones finish. Dispatches are still
        accepted. Returns False if it was paused already. Raises ``UnknownQueueError`` for a
        queue nothing ever dispatched to or consumed (a misspelt name)."""
        return bool(self._client.pause(self.name))

    async def pause_async(self) -> bool:
        return bool(await self._client.pause(self.name, asynchronous=True))

    def resume(self) -> bool:
        """Workers take jobs from this queue again, at once. Returns False if it was not paused."""
        return bool(self._client.resume(self.name))

    async def resume_async(self) -> bool:
        return bool(await self._client.resume(self.name, asynchronous=True))

    def is_paused(self) -> bool:
        return bool(self.counts()["paused"])

    async def is_paused_async(self) -> bool:
        return bool((await self.counts_async())["paused"])

    @staticmethod
    def all(*, connection: str = "default") -> list[Queue]:
        """Every queue of the connection that something dispatched to or a worker consumed,
        by name."""
        return [Queue(n, connection=connection) for n in config.client(connection).queues()]

    @staticmethod
    async def all_async(*, connection: str = "default") -> list[Queue]:
        return [Queue(n, connection=connection) for n in await config.client(connection).queues(asynchronous=True)]

    def get_job(self, job_id: str) -> JobInfo | None:
        """The job's state and record, or None if no such job is known."""
        info = job_info(job_id, self.name, self._client.status(self.name, job_id))
        return None if info.state == "unknown" else info

    async def get_job_async(self, job_id: str) -> JobInfo | None:
        info = job_info(job_id, self.name, await self._client.status(self.name, job_id, asynchronous=True))
        return None if info.state == "unknown" else info

    def failed(self, limit: int = 100) -> list[FailedJob]:
        """Jobs that failed for good, oldest first, with their error and traceback."""
        return _failed(self.name, self._client.failed_list(self.name, limit))

    async def failed_async(self, limit: int = 100) -> list[FailedJob]:
        return _failed(self.name, await self._client.failed_list(self.name, limit, asynchronous=True))

    def retry_failed(self) -> int:
        """Puts every failed job back in the queue with its attempts reset; returns how many."""
        return int(self._client.failed_retry(self.name))

    async def retry_failed_async(self) -> int:
        return int(await self._client.failed_retry(self.name, asynchronous=True))

    def purge_failed(self) -> int:
        """Deletes every failed job; returns how many."""
        return int(self._client.failed_purge(self.name))

    async def purge_failed_async(self) -> int:
        return int(await self._client.failed_purge(self.name, asynchronous=True))

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, connection={self.connection!r})"
