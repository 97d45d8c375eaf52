"""The worker registry: each running worker process keeps one entry in the Redis hash
``<prefix>:workers`` (worker id -> JSON), written every ``registry_interval`` seconds from the
worker's supervising loop (never per job) and deleted on a clean stop. ``workers()`` reads it:
an entry not refreshed for ``GONE_AFTER`` intervals is a worker that died (shown ``alive=False``);
one not refreshed for ``PRUNE_AFTER`` intervals is deleted by the reader."""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import config, serde
from ._core import __version__

__all__ = ["WorkerInfo", "workers", "workers_async", "DEFAULT_INTERVAL", "GONE_AFTER", "PRUNE_AFTER"]

#: Seconds between two writes of a worker's entry (``Worker(registry_interval=...)``).
DEFAULT_INTERVAL = 5.0
#: An entry older than this many of its intervals is a worker that is gone (killed, host lost).
GONE_AFTER = 3
#: An entry older than this many of its intervals is deleted by the next reader.
PRUNE_AFTER = 60
#: The window of the rates an entry carries (completed and failed jobs per second).
RATE_WINDOW = 60.0


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process as its last registry entry describes it."""

    id: str
    host: str
    pid: int
    #: The pid of the pool's supervising process for a pool child, else None.
    pool: int | None
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_seen: datetime
    completed: int
    failed: int
    retried: int
    #: Completed and failed jobs per second over the last minute (or since it started).
    completed_rate: float
    failed_rate: float
    version: str
    #: Seconds between two refreshes of the entry.
    interval: float
    #: False once the entry went unrefreshed for ``GONE_AFTER`` intervals (the worker died).
    alive: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "host": self.host, "pid": self.pid, "pool": self.pool, "queues": self.queues,
            "concurrency": self.concurrency, "started_at": self.started_at.isoformat(), "last_seen": self.last_seen.isoformat(),
            "completed": self.completed, "failed": self.failed, "retried": self.retried,
            "completed_rate": self.completed_rate, "failed_rate": self.failed_rate, "version": self.version,
            "interval": self.interval, "alive": self.alive,
        }


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _info(worker_id: str, raw: bytes, now: float) -> WorkerInfo | None:
    try:
        e = serde.loads(raw)
        interval = float(e["interval"])
        return WorkerInfo(
            id=worker_id, host=str(e["host"]), pid=int(e["pid"]), pool=e.get("pool"), queues=list(e["queues"]),
            concurrency=int(e["concurrency"]), started_at=_at(float(e["started_at"])), last_seen=_at(float(e["last_seen"])),
            completed=int(e["completed"]), failed=int(e["failed"]), retried=int(e["retried"]),
            completed_rate=float(e.get("completed_rate", 0.0)), failed_rate=float(e.get("failed_rate", 0.0)),
            version=str(e.get("version", "")), interval=interval, alive=now - float(e["last_seen"]) <= GONE_AFTER * interval,
        )
    except (ValueError, KeyError, TypeError):  # an entry fastjobs did not write
        return None


def _sorted(rows: list[tuple[str, bytes]], queue: str | None) -> tuple[list[WorkerInfo], list[str]]:
    """The entries to show (live ones first, then by host and pid) and the ids to delete."""
    now = time.time()
    out, prune = [], []
    for worker_id, raw in rows:
        info = _info(worker_id, raw, now)
        if info is None or now - info.last_seen.timestamp() > PRUNE_AFTER * info.interval:
            prune.append(worker_id)
        elif queue is None or queue in info.queues:
            out.append(info)
    return sorted(out, key=lambda w: (not w.alive, w.host, w.pid, w.id)), prune


def workers(*, connection: str = "default", queue: str | None = None) -> list[WorkerInfo]:
    """The workers of the connection's registry, live ones first, then by host and pid; with
    ``queue``, only those consuming it. Entries of workers long gone are deleted on the way."""
    client = config.client(connection)
    out, prune = _sorted(client.workers_read(), queue)
    if prune:
        client.workers_remove(prune)
    return out


async def workers_async(*, connection: str = "default", queue: str | None = None) -> list[WorkerInfo]:
    client = config.client(connection)
    out, prune = _sorted(await client.workers_read(asynchronous=True), queue)
    if prune:
        await client.workers_remove(prune, asynchronous=True)
    return out


class Registration:
    """A running worker's entry: ``refresh()`` is called from the worker's supervising loop
    (every half second or less) and writes only once per interval."""

    def __init__(self, client: Any, worker_id: str, queues: list[str], concurrency: int, interval: float,
                 pool: int | None) -> None:
        self.client = client
        self.worker_id = worker_id
        self.interval = interval
        self.entry: dict[str, Any] = {
            "host": socket.gethostname(), "pid": os.getpid(), "pool": pool, "queues": queues, "concurrency": concurrency,
            "started_at": time.time(), "version": __version__, "interval": interval,
        }
        self._next = 0.0
        self._samples: deque[tuple[float, int, int]] = deque()

    def refresh(self, read_stats: Callable[[], dict[str, int]]) -> None:
        """Writes the entry if an interval passed since the last write (``read_stats`` is
        called then only: the engine's ``stats``)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        stats = read_stats()
        completed, failed = stats.get("completed", 0), stats.get("failed", 0)
        self._samples.append((now, completed, failed))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        t0, c0, f0 = self._samples[0]
        span = now - t0
        entry = dict(self.entry, last_seen=time.time(), completed=completed, failed=failed, retried=stats.get("retried", 0),
                     completed_rate=(completed - c0) / span if span > 0 else 0.0,
                     failed_rate=(failed - f0) / span if span > 0 else 0.0)
        try:
            self.client.worker_put(self.worker_id, serde.dumps(entry))
        except Exception:  # noqa: BLE001 - Redis trouble: the engine reports it; the next refresh tries again
            self._next = now + min(self.interval, 1.0)

    def remove(self) -> None:
        try:
            self.client.workers_remove([self.worker_id])
        except Exception:  # noqa: BLE001 - Redis gone at the stop: readers see the entry go stale
            pass
