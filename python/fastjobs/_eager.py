"""Starting an async handler as a Task, eagerly where Python allows it.

A handler runs inside a real ``asyncio.Task`` from its first line: ``asyncio.timeout()``,
``asyncio.current_task()`` and the libraries built on them (redis.asyncio, aiohttp) need one.
On Python 3.12+ the Task starts eagerly (``eager_start=True``): it runs at once up to its first
real suspension, so a handler that never waits costs no trip through the event loop. Older
Pythons schedule the Task as usual. (An earlier version ran the first step with no Task at
all; handlers that opened a timeout failed with "Timeout should be used inside a task".)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

_EAGER = sys.version_info >= (3, 12)


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                  done: Callable[[asyncio.Task[Any]], None]) -> asyncio.Task[Any] | None:
    """Starts ``coro`` as a Task and calls ``done(task)`` once it has ended (one callback per
    Task: the worker's hot path). Returns the Task while it runs, or None if it already
    finished (eager start), after calling ``done``."""
    if _EAGER:
        task = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
        if task.done():
            done(task)
            return None
    else:
        task = loop.create_task(coro)
    task.add_done_callback(done)
    return task
