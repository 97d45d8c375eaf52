"""Jobs that worker processes started by the tests run (`fastjobs worker tests.apps.jobs`)."""

from __future__ import annotations

import os
import time
from typing import Any

import fastjobs


class Noop(fastjobs.Job[Any, None]):
    def process(self, payload: Any) -> None:
        return None


class Echo(fastjobs.Job[Any, Any]):
    def process(self, payload: Any) -> Any:
        return payload


class Sleep(fastjobs.Job[dict, int]):
    """Sleeps payload["seconds"], returns the worker's pid."""

    def process(self, payload: dict) -> int:
        time.sleep(payload["seconds"])
        return os.getpid()


class HoldGil(fastjobs.Job[dict, int]):
    """Keeps the GIL for about payload["seconds"] inside one C call (no bytecode runs, so no
    other Python thread can take the GIL meanwhile)."""

    def process(self, payload: dict) -> int:
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            sum(range(20_000_000))  # one C call: holds the GIL throughout
        return os.getpid()


class Pid(fastjobs.Job[Any, int]):
    def process(self, payload: Any) -> int:
        return os.getpid()


def _stamps() -> tuple[Any, str]:
    from urllib.parse import urlparse

    from tests.resp import Redis

    s = fastjobs.config.settings()
    # The session's Redis, whatever store the jobs run on (conftest sets it), under the test's
    # prefix (conftest's too: a PostgreSQL store keeps the default one).
    url = os.environ.get("FASTJOBS_TEST_REDIS_URL", s.url)
    return Redis(urlparse(url).port or 6379), f"{os.environ.get('FASTJOBS_TEST_PREFIX', s.prefix)}:test:stamps"


class Stamp(fastjobs.Job[Any, None]):
    """Appends "<job id> <pid> <ms since the epoch>" to the test's stamps list: tests see every
    run, in the order the runs started, from any process."""

    queue = "stamps"

    def process(self, payload: Any) -> None:
        redis, key = _stamps()
        redis("RPUSH", key, f"{self.job_id} {os.getpid()} {time.time() * 1000:.3f}")


def stamps(redis: Any, prefix: str) -> list[tuple[str, int, float]]:
    """The runs Stamp recorded: (job id, pid, started ms)."""
    out = []
    for line in redis("LRANGE", f"{prefix}:test:stamps", 0, -1):
        job_id, pid, ms = (line.decode() if isinstance(line, bytes) else line).split()
        out.append((job_id, int(pid), float(ms)))
    return out


@fastjobs.periodic(every="1s", key="app-heartbeat", data={"from": "code"})
class CodeTick(fastjobs.Job[Any, None]):
    """Declared periodic in code: registered by any worker of the 'code-ticks' queue."""

    queue = "code-ticks"

    def process(self, payload: Any) -> None:
        redis, key = _stamps()
        redis("RPUSH", key, f"{self.job_id} {os.getpid()} {time.time() * 1000:.3f}")


class Leaf(fastjobs.Job[int, int]):
    """A flow child: returns its payload; payload < 0 fails."""

    queue = "flows"

    def process(self, payload: int) -> int:
        if payload < 0:
            raise ValueError(f"leaf {payload} refused")
        return payload


class SlowLeaf(fastjobs.Job[float, float]):
    queue = "flows"

    def process(self, payload: float) -> float:
        time.sleep(payload)
        return payload


class Gather(fastjobs.Job[Any, dict]):
    """A flow parent: records its run in the stamps list and sums its children's results."""

    queue = "flows"

    def process(self, payload: Any) -> dict:
        redis, key = _stamps()
        redis("RPUSH", key, f"{self.job_id} {os.getpid()} {time.time() * 1000:.3f}")
        results = self.children_results()
        values = [r["result"] for r in results.values() if "result" in r]
        return {"count": len(results), "sum": sum(v.get("sum", 0) if isinstance(v, dict) else v for v in values),
                "errors": sorted(r["error"]["message"] for r in results.values() if "error" in r)}


class Patient(fastjobs.Job[dict, str]):
    """Works in small steps for up to payload["seconds"], checking for a cancel between
    steps; payload["ignore"] finishes anyway. Marks its start in the stamps list."""

    def process(self, payload: dict) -> str:
        redis, key = _stamps()
        redis("RPUSH", key, f"{self.job_id} {os.getpid()} {time.time() * 1000:.3f}")
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            if not payload.get("ignore"):
                self.check_cancelled()
            time.sleep(0.01)
        return "finished" if not self.cancelled else "finished though cancelled"


class AsyncPatient(fastjobs.Job[dict, str]):
    """Sleeps payload["seconds"] on the event loop; records whether it saw CancelledError."""

    async def process(self, payload: dict) -> str:
        import asyncio

        redis, key = _stamps()
        redis("RPUSH", key, f"{self.job_id} {os.getpid()} {time.time() * 1000:.3f}")
        try:
            await asyncio.sleep(payload["seconds"])
        except asyncio.CancelledError:
            redis("RPUSH", key, f"{self.job_id} cancelled-error")
            raise
        return "finished"


class Span(fastjobs.Job[dict, None]):
    """A job of queue "groups": sleeps payload["seconds"] (0 by default; not when it runs again
    after its worker died), raises on its first attempt when payload["fail_first"], then
    appends "<payload["g"]> <pid> <start ms> <end ms>" to the test's stamps list: tests see when
    the jobs of each group ran, in the order they ended, from any process."""

    queue = "groups"

    def process(self, payload: dict) -> None:
        start = time.time() * 1000
        if payload.get("fail_first") and self.attempt == 0:
            raise RuntimeError("the first attempt fails")
        if not self.redelivered:
            time.sleep(payload.get("seconds", 0))
        redis, key = _stamps()
        redis("RPUSH", key, f"{payload['g']} {os.getpid()} {start:.3f} {time.time() * 1000:.3f}")


class WhichGroup(fastjobs.Job[Any, Any]):
    """Returns the group the handler sees (``self.group``)."""

    queue = "groups"

    def process(self, payload: Any) -> Any:
        return self.group


class WhichGroupAsync(fastjobs.Job[Any, Any]):
    queue = "groups"

    async def process(self, payload: Any) -> Any:
        return self.group


def spans(redis: Any, prefix: str) -> list[tuple[str, int, float, float]]:
    """The runs Span recorded: (group, pid, start ms, end ms), in the order they ended."""
    out = []
    for line in redis("LRANGE", f"{prefix}:test:stamps", 0, -1):
        g, pid, start, end = (line.decode() if isinstance(line, bytes) else line).split()
        out.append((g, int(pid), float(start), float(end)))
    return out


class HookFlaky(fastjobs.Job[Any, str]):
    """Fails its first attempt, or every attempt when payload["always"] (tests/test_hooks.py)."""

    queue = "hooked"
    attempts = 2
    backoff = 0

    def process(self, payload: Any) -> str:
        if payload.get("always") or self.attempt == 0:
            raise RuntimeError(f"attempt {self.attempt} fails")
        return "ok"
