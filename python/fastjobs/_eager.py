"""Starting a coroutine eagerly: run it at once up to its first real suspension, and create
an asyncio Task only if it suspends. Most handlers of a busy worker finish without ever
waiting (or wait once); this skips a Task and a trip through the event loop per job
(Python 3.12's eager task factory does the same; fastjobs supports 3.9+)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine, Generator, Optional

Done = Callable[[Any, Optional[BaseException]], None]


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], done: Done) -> "Optional[asyncio.Task[None]]":
    """Runs ``coro`` now. If it finishes, calls ``done(result, None)`` (or ``done(None, exc)``)
    and returns None; if it suspends, returns the Task that finishes it and calls ``done``."""
    try:
        first = coro.send(None)
    except StopIteration as stop:
        done(stop.value, None)
        return None
    except BaseException as exc:  # noqa: BLE001 - reported through done
        done(None, exc)
        return None
    return loop.create_task(_finish(coro, first, done))


class _Resume:
    """Awaitable that carries on a coroutine already started: it hands each thing the
    coroutine yields (a future, or None for a bare yield) to the Task driving it."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.first
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # noqa: BLE001 - cancellation and errors go into the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], first: Any, done: Done) -> None:
    try:
        result = await _Resume(coro, first)
    except BaseException as exc:  # noqa: BLE001
        done(None, exc)
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        return
    done(result, None)
