"""``Queue``: sizes, state counts, job lookup, controls (pause, cancel, remove, empty) and
failed-job maintenance of one queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import chain as chains
from . import config, serde
from . import flow as flows
from .dispatch import JobInfo, job_info
from .errors import JobStateError, UnknownJobError
from .events import DEFAULT_KEEP, Event, EventStream, check_keep
from .options import Duration, parse_duration

__all__ = ["Queue", "QueueLimits", "FailedJob"]


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


@dataclass(frozen=True)
class QueueLimits:
    """A queue's limits (``Queue.limits()``); None where there is no such limit."""

    rate: int | None = None
    per: float | None = None
    concurrency: int | None = None


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 1 <= value <= 2**53:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value


def _keep(enabled: Any, keep: Any) -> int | None:
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {type(enabled).__name__}")
    return check_keep(keep) if enabled else None


def _limits(rate: Any, per: Any, concurrency: Any) -> tuple[int | None, float | None, int | None]:
    if (rate is None) != (per is None):
        raise ValueError("a rate limit needs both rate (jobs) and per (a duration), e.g. rate=100, per='1s'")
    seconds = None if per is None else parse_duration(per, "per", minimum=0.001)
    return (None if rate is None else _count(rate, "rate"), seconds,
            None if concurrency is None else _count(concurrency, "concurrency"))


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
        info = job_info(job_id, self.name, self._client.status(self.name, job_id, progress=True))
        return None if info.state == "unknown" else info

    async def get_job_async(self, job_id: str) -> JobInfo | None:
        info = job_info(job_id, self.name, await self._client.status(self.name, job_id, progress=True, asynchronous=True))
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

    # ---- events: what happens to the queue's jobs, in order (events.py) ----

    def set_events(self, enabled: bool = True, *, keep: int = DEFAULT_KEEP) -> None:
        """Switches the queue's events on (or off with ``False``) for every producer and worker
        at once. On, each change of its jobs' states adds one entry to the store's stream that
        keeps about ``keep`` entries (an entry lists every job one script call changed: a drain's
        batch, a bulk write). Off (the default), nothing is written. Read them with ``events()``."""
        self._client.set_events(self.name, _keep(enabled, keep))

    async def set_events_async(self, enabled: bool = True, *, keep: int = DEFAULT_KEEP) -> None:
        await self._client.set_events(self.name, _keep(enabled, keep), asynchronous=True)

    def events_keep(self) -> int | None:
        """How many entries the queue's events stream keeps, or None while its events are off."""
        n: int | None = self._client.events_keep(self.name)
        return n

    def events(self, since: str = "$", *, timeout: float | None = None) -> Iterator[Event]:
        """The queue's events in order, one ``Event`` per job and change, as they happen:
        ``since="$"`` only new ones, ``"0"`` every one the stream keeps, or an ``Event.id`` to
        resume just after it. The iterator waits for more; with ``timeout`` it ends after that
        many seconds without an event. It reads on a connection of its own."""
        return iter(EventStream(self._client, self.name, since, timeout))

    def events_async(self, since: str = "$", *, timeout: float | None = None) -> AsyncIterator[Event]:
        """``events()`` for asyncio: ``async for event in queue.events_async(): ...``."""
        return EventStream(self._client, self.name, since, timeout).aiter()

    # ---- limits, applied by every worker of the queue together ----

    def set_limits(self, *, rate: int | None = None, per: Duration | None = None, concurrency: int | None = None) -> None:
        """Replaces the queue's limits, for every worker on every machine at once: at most
        ``rate`` jobs start per ``per`` (a duration: ``"1s"``, ``60``, a ``timedelta``), and at
        most ``concurrency`` jobs of the queue are leased at once (running or prefetched).
        Leave one out for no such limit; ``set_limits()`` clears both. Workers that meet a
        limit sleep until its next slot (the window's end; a settled job for concurrency)."""
        self._client.set_limits(self.name, *_limits(rate, per, concurrency))

    async def set_limits_async(self, *, rate: int | None = None, per: Duration | None = None, concurrency: int | None = None) -> None:
        await self._client.set_limits(self.name, *_limits(rate, per, concurrency), asynchronous=True)

    def limits(self) -> QueueLimits:
        return QueueLimits(*self._client.limits(self.name))

    async def limits_async(self) -> QueueLimits:
        return QueueLimits(*(await self._client.limits(self.name, asynchronous=True)))

    def set_group_limits(self, *, rate: int | None = None, per: Duration | None = None, concurrency: int | None = None) -> None:
        """Replaces the limits that every group of this queue has (``.group(key)`` jobs), each
        group on its own, for every worker at once: at most ``rate`` jobs of one group start per
        ``per``, and at most ``concurrency`` jobs of one group are leased at once. A group at
        its limit is passed over and the other groups go on. Leave one out for no such limit;
        ``set_group_limits()`` clears both. Checked as ``set_limits``."""
        self._client.set_group_limits(self.name, *_limits(rate, per, concurrency))

    async def set_group_limits_async(self, *, rate: int | None = None, per: Duration | None = None,
                                     concurrency: int | None = None) -> None:
        await self._client.set_group_limits(self.name, *_limits(rate, per, concurrency), asynchronous=True)

    def group_limits(self) -> QueueLimits:
        """The limits every group of this queue has (``set_group_limits``)."""
        return QueueLimits(*self._client.group_limits(self.name))

    async def group_limits_async(self) -> QueueLimits:
        return QueueLimits(*(await self._client.group_limits(self.name, asynchronous=True)))

    # ---- one job by id ----

    def cancel(self, job_id: str) -> str:
        """Cancels a job and returns the state it was in. A waiting or delayed job is taken
        out of the queue at once and ends ``cancelled`` (``wait_result`` raises
        ``JobCancelled``); a running job's worker is asked to stop it: its handler sees
        ``self.cancelled`` (async handlers get ``CancelledError``) and ends ``cancelled`` if it
        gives up, ``completed`` if it finishes anyway. A chain step or flow node that is
        cancelled fails its workflow by the workflow's own policy. Raises ``JobStateError``
        for a job that already finished, ``UnknownJobError`` for one never dispatched."""
        return self._after_cancel(job_id, self._client.cancel(self.name, job_id))

    async def cancel_async(self, job_id: str) -> str:
        reply = await self._client.cancel(self.name, job_id, asynchronous=True)
        return await asyncio.to_thread(self._after_cancel, job_id, reply)

    def remove(self, job_id: str) -> str:
        """Deletes every trace of a job that is not running (waiting, delayed, failed, or its
        stored result once completed) and returns the state it was in; a caller-chosen id is
        free to be dispatched again. Raises ``JobStateError`` for a running job (cancel it),
        ``UnknownJobError`` for an unknown one."""
        return self._after_remove(job_id, self._client.cancel(self.name, job_id, remove=True))

    async def remove_async(self, job_id: str) -> str:
        return self._after_remove(job_id, await self._client.cancel(self.name, job_id, remove=True, asynchronous=True))

    def retry(self, job_id: str) -> None:
        """Puts one failed job back in the queue with its attempts reset. Raises
        ``JobStateError`` if the job is not failed, ``UnknownJobError`` if it is unknown."""
        if not self._client.retry_job(self.name, job_id):
            self._not_retried(job_id, self._client.status(self.name, job_id)[0])

    async def retry_async(self, job_id: str) -> None:
        if not await self._client.retry_job(self.name, job_id, asynchronous=True):
            self._not_retried(job_id, (await self._client.status(self.name, job_id, asynchronous=True))[0])

    def _not_retried(self, job_id: str, state: str) -> None:
        if state == "unknown":
            raise UnknownJobError(f"no job {job_id} in queue {self.name!r} (never dispatched, or expired)")
        raise JobStateError(f"job {job_id} on queue {self.name!r} is {state}, not failed: only failed jobs are retried",
                            job_id, self.name, state)

    def _after_cancel(self, job_id: str, reply: tuple[str, Any, bool]) -> str:
        state, record, done = reply
        if state == "unknown":
            raise UnknownJobError(f"no job {job_id} in queue {self.name!r} (never dispatched, or expired)")
        if not done:
            raise JobStateError(f"job {job_id} on queue {self.name!r} is {state} already: only waiting, delayed and running "
                                "jobs can be cancelled", job_id, self.name, state)
        if state in ("waiting", "delayed") and record is not None:
            self._workflow_cancelled([(job_id, record[0], record[5])])
        return state

    def _after_remove(self, job_id: str, reply: tuple[str, Any, bool]) -> str:
        state, _record, done = reply
        if state == "unknown":
            raise UnknownJobError(f"no job {job_id} in queue {self.name!r} (never dispatched, or expired)")
        if not done:
            raise JobStateError(f"job {job_id} on queue {self.name!r} is running: cancel it (it cannot be removed while it runs)",
                                job_id, self.name, state)
        return state

    def _workflow_cancelled(self, jobs: list[tuple[str, str, bytes]]) -> None:
        """Chain steps and flow nodes cancelled before they ran: their workflows follow their
        failure policy, as for a step that failed."""
        for job_id, name, raw in jobs:
            if not raw:
                continue
            opts = serde.loads(raw)
            error = {"type": "fastjobs.errors.JobCancelled", "message": f"job {job_id} was cancelled", "traceback": ""}
            if isinstance(opts, dict) and "chain" in opts:
                chains.step_failed(self._client, opts["chain"], job_id, name, error)
            if isinstance(opts, dict) and "flow" in opts:
                flows.node_failed(self._client, opts["flow"], job_id, name, error)

    # ---- the whole queue ----

    def empty(self) -> int:
        """Cancels every waiting and delayed job (BullMQ's ``drain``) and returns how many;
        running and failed jobs stay. Works page by page (5,000 jobs per Redis call), so
        Redis keeps serving everyone meanwhile."""
        n, with_options = self._client.empty(self.name)
        self._workflow_cancelled(with_options)
        return int(n)

    async def empty_async(self) -> int:
        n, with_options = await self._client.empty(self.name, asynchronous=True)
        await asyncio.to_thread(self._workflow_cancelled, with_options)
        return int(n)

    def obliterate(self, *, force: bool = False) -> int:
        """Deletes the queue and everything in it (jobs in every state, results, counters,
        the paused marker) and returns how many keys went. Refuses (``ValueError``) while jobs
        of it run, unless ``force``; then their outcomes are lost."""
        return int(self._client.obliterate(self.name, force=force))

    async def obliterate_async(self, *, force: bool = False) -> int:
        return int(await self._client.obliterate(self.name, force=force, asynchronous=True))

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, connection={self.connection!r})"
