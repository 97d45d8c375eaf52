"""Jobs the dashboard's tests run (tests/test_dashboard.py)."""

from __future__ import annotations

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
