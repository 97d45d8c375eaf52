"""Jobs of the pool tests (`fastjobs worker tests.apps.pool_jobs --processes N`): each run is
counted in Redis, from whichever child runs it, so the tests see every run and every
duplicate."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlparse

import fastjobs
from tests.resp import Redis

_HOARD: list[bytearray] = []


def _redis() -> tuple[Redis, str]:
    s = fastjobs.config.settings()
    return Redis(urlparse(s.url).port or 6379), s.prefix


def runs(redis: Any, prefix: str) -> dict[str, int]:
    """Job id -> how many times it ran."""
    flat = redis("HGETALL", f"{prefix}:test:runs") or []
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in zip(flat[::2], flat[1::2])}


def pids(redis: Any, prefix: str) -> set[int]:
    return {int(p) for p in redis("SMEMBERS", f"{prefix}:test:pids") or []}


class Count(fastjobs.Job[dict, None]):
    """Counts its run and its process, then sleeps payload["sleep"] seconds (default none)."""

    queue = "pool"

    def process(self, payload: dict) -> None:
        redis, prefix = _redis()
        redis("HINCRBY", f"{prefix}:test:runs", self.job_id, 1)
        redis("SADD", f"{prefix}:test:pids", os.getpid())
        if payload.get("sleep"):
            time.sleep(payload["sleep"])


class Poison(fastjobs.Job[dict, None]):
    """Kills the process that runs it, as a crashing C extension would."""

    queue = "pool"

    def process(self, payload: dict) -> None:
        redis, prefix = _redis()
        redis("HINCRBY", f"{prefix}:test:runs", self.job_id, 1)
        os._exit(3)


class Hoard(fastjobs.Job[dict, None]):
    """Counts its run and keeps payload["mb"] MB alive in its process: memory that leaks."""

    queue = "pool"

    def process(self, payload: dict) -> None:
        redis, prefix = _redis()
        redis("HINCRBY", f"{prefix}:test:runs", self.job_id, 1)
        _HOARD.append(bytearray(payload["mb"] * 1_000_000))


class AsyncCount(fastjobs.Job[dict, None]):
    queue = "pool"

    async def process(self, payload: dict) -> None:
        redis, prefix = _redis()
        redis("HINCRBY", f"{prefix}:test:runs", self.job_id, 1)
        redis("SADD", f"{prefix}:test:pids", os.getpid())
