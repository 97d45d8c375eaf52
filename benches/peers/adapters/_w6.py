"""W6 of CONTRACT.md: single dispatches from one producer process, as a web app makes them
(one job per request, many requests in flight, no worker running).

Two faces, each a list of points (one per concurrency), `seconds` of calls per point:

- async: C asyncio tasks on one event loop, each looping `await one()`;
- threads: T threads, each looping `one()` on the same client objects (a web app's
  threads share its queue client).

Every call enqueues exactly one job. Each task/thread makes one untimed call before the
clock starts, so connections its calls need are open (a warm web app has them). Standard
library only: the module runs in every peer venv.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable

ITEM = {"u": 1}
ASYNC_LEVELS = (1, 10, 100, 500)
THREAD_LEVELS = (1, 8, 32)
DEFAULT_SECONDS = 3.0


def pct(xs: list[float], q: float) -> float:
    """Percentile with linear interpolation (numpy's default), q in [0, 1]."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _figures(lats: list[float], seconds: float) -> dict:
    return {
        "per_s": round(len(lats) / seconds, 1),
        "p50_ms": round(pct(lats, 0.50) * 1000, 3),
        "p99_ms": round(pct(lats, 0.99) * 1000, 3),
        "calls": len(lats),
    }


async def _async_point(one: Callable[[dict], Awaitable[object]], c: int, seconds: float) -> dict:
    lats: list[float] = []
    ready = 0
    go = asyncio.Event()
    stop = 0.0

    async def loop() -> None:
        nonlocal ready, stop
        await one(ITEM)  # untimed: opens this task's connection
        ready += 1
        if ready == c:  # the last task to be ready starts the clock
            stop = time.perf_counter() + seconds
            go.set()
        await go.wait()
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await one(ITEM)
            lats.append(time.perf_counter() - t)

    await asyncio.gather(*(loop() for _ in range(c)))
    # Calls in flight at the deadline finish: the window ends when the last one does.
    return _figures(lats, time.perf_counter() - (stop - seconds))


async def async_face(one: Callable[[dict], Awaitable[object]], seconds: float,
                     levels: tuple[int, ...] = ASYNC_LEVELS) -> dict:
    """{"C": figures or {"error": ...}} for each C in levels."""
    out: dict = {}
    for c in levels:
        try:
            out[str(c)] = await _async_point(one, c, seconds)
        except Exception as e:  # noqa: BLE001 - one point failing does not hide the others
            out[str(c)] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out


def _threads_point(one: Callable[[dict], object], n: int, seconds: float) -> dict:
    lats: list[list[float]] = [[] for _ in range(n)]
    errors: list[BaseException] = []
    clock = {"stop": 0.0}

    def start_clock() -> None:
        clock["stop"] = time.perf_counter() + seconds

    barrier = threading.Barrier(n, action=start_clock)

    def loop(mine: list[float]) -> None:
        try:
            one(ITEM)  # untimed: this thread's connection
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        barrier.wait()
        stop = clock["stop"]
        while not errors and time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                one(ITEM)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return
            mine.append(time.perf_counter() - t)

    threads = [threading.Thread(target=loop, args=(lats[i],), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    end = time.perf_counter()
    if errors:
        e = errors[0]
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    return _figures([x for xs in lats for x in xs], end - (clock["stop"] - seconds))


def threads_face(one: Callable[[dict], object], seconds: float,
                 levels: tuple[int, ...] = THREAD_LEVELS) -> dict:
    """{"T": figures or {"error": ...}} for each T in levels."""
    return {str(n): _threads_point(one, n, seconds) for n in levels}


def unsupported(why: str) -> dict:
    return {"error": why}
