"""Jobs that the metrics and tracing tests run (tests/test_metrics.py, tests/test_tracing.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import fastjobs


class MeteredTick(fastjobs.Job[Any, None]):
    queue = "metered"

    def process(self, payload: Any) -> None:
        return None


class MeteredBoom(fastjobs.Job[Any, None]):
    """Fails for good at its only attempt."""

    queue = "metered"
    attempts = 1

    def process(self, payload: Any) -> None:
        raise RuntimeError("boom")


class MeteredFlaky(fastjobs.Job[Any, str]):
    """Fails its first attempt, then completes."""

    queue = "metered"
    attempts = 2
    backoff = 0

    def process(self, payload: Any) -> str:
        if self.attempt == 0:
            raise RuntimeError("first attempt fails")
        return "ok"


class MeteredAsyncTick(fastjobs.Job[Any, int]):
    queue = "metered"

    async def process(self, payload: Any) -> int:
        await asyncio.sleep(0)
        return 1
