"""Jobs of tests/test_admin_cli.py: they run on queue "ops"."""

from __future__ import annotations

from typing import Any

import fastjobs


class OpsWork(fastjobs.Job[Any, Any]):
    queue = "ops"

    def process(self, payload: Any) -> Any:
        return payload


class OpsBoom(fastjobs.Job[Any, None]):
    queue = "ops"
    attempts = 1

    def process(self, payload: Any) -> None:
        raise ValueError(f"boom {payload}")
