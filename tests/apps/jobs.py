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
