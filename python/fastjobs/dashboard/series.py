"""The dashboard's time series: each queue's counters sampled every few seconds into a ring
buffer in the dashboard's memory (nothing is written to Redis)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from ..queue import Queue

__all__ = ["Sampler"]

log = logging.getLogger("fastjobs.dashboard")


class Sampler:
    """Samples ``Queue.counts()`` of every queue of a connection every ``every`` seconds and
    keeps the last ``keep`` points. A point holds, per queue, the completions and failures per
    second since the point before, the jobs waiting and running, and an estimate of the wait
    a new job meets (waiting jobs over completions per second: Little's law)."""

    def __init__(self, connection: str = "default", *, every: float = 5.0, keep: int = 720) -> None:
        if not every > 0:
            raise ValueError(f"sample_every must be a number of seconds above 0, got {every!r}")
        if keep < 2:
            raise ValueError(f"history must keep at least 2 points, got {keep!r}")
        self.connection = connection
        self.every = float(every)
        self.points: deque[dict[str, Any]] = deque(maxlen=keep)
        self._last: dict[str, tuple[float, int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts sampling on the running event loop (once; again after ``stop``)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # noqa: BLE001 - Redis away for a moment: the next tick tries again
                log.warning("fastjobs dashboard: sampling the queues failed", exc_info=True)
            await asyncio.sleep(self.every)

    async def sample(self) -> dict[str, Any]:
        """Takes one point now and returns it."""
        queues = await Queue.all_async(connection=self.connection)
        point: dict[str, Any] = {"t": time.time(), "queues": {}}
        for q in queues:
            c = await q.counts_async()
            now = time.time()
            completed, failed = int(c["completed"]), int(c["failed"])
            entry: dict[str, Any] = {"waiting": int(c["waiting"]), "active": int(c["active"]),
                                     "completed_per_s": None, "failed_per_s": None, "wait_estimate_s": None}
            prev = self._last.get(q.name)
            if prev is not None and now > prev[0]:
                seconds = now - prev[0]
                rate = max(0, completed - prev[1]) / seconds
                entry["completed_per_s"] = round(rate, 3)
                # failed is the failed set's size: a purge or retry shrinks it, counted as no failures
                entry["failed_per_s"] = round(max(0, failed - prev[2]) / seconds, 3)
                if rate > 0:
                    entry["wait_estimate_s"] = round(entry["waiting"] / rate, 3)
            self._last[q.name] = (now, completed, failed)
            point["queues"][q.name] = entry
        self.points.append(point)
        return point

    def series(self) -> dict[str, Any]:
        return {"every": self.every, "points": list(self.points)}
