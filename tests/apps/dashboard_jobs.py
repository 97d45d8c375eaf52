"""Jobs the dashboard's tests run (tests/test_dashboard.py)."""

from __future__ import annotations

import time
from typing import Any

import fastjobs


class DashBoom(fastjobs.Job[Any, None]):
    """Fails every attempt, so it lands among the failed jobs with its traceback."""

    queue = "dash-fail"

    def process(self, payload: Any) -> None:
        raise RuntimeError(f"boom {payload}")


class DashChatty(fastjobs.Job[Any, dict]):
    """Reports progress and log lines, then returns its payload."""

    queue = "dash-ok"

    def process(self, payload: Any) -> dict:
        self.progress(0.5, step="half")
        self.log("working on it", level="info", n=1)
        self.log("nearly there", level="warning")
        return {"echo": payload}


class DashLong(fastjobs.Job[Any, str]):
    """Reports a quarter done and a log line, then works in small steps until cancelled (at
    most a minute)."""

    queue = "dash-long"

    def process(self, payload: Any) -> str:
        self.progress(0.25, step="started")
        self.log("started")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check_cancelled()
            time.sleep(0.01)
        return "finished"
