"""The SQLite store under faults: worker processes sharing one database file SIGKILLed
mid-drain, again and again (scenario a of test_worker_faults.py, on a file): nothing
acknowledged lost, every duplicate run a logged redelivery of a reaped lease."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ..resp import Redis
from .conftest import connect, sizes
from .drain_kills import kill_mid_drain


def rows(path: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path, timeout=10) as db:
        return db.execute(query, args).fetchall()


@sizes(short=(1200, 2), long=(6000, 6))
def test_workers_killed_mid_drain_on_sqlite_lose_nothing_and_rerun_only_logged_orphans(
        size: tuple[int, int], tmp_path: Path, workers: Any, ledger: Redis, prefix: str, figures: Any) -> None:
    total, kills = size
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"
    connect(url, prefix)
    key = f"{prefix}\n"  # a queue's rows are keyed by the prefix, a newline, its name
    figures(**kill_mid_drain(
        total, kills, workers, ledger, prefix, url=url,
        leases=lambda q: {t for (t,) in rows(path, "SELECT token FROM leases WHERE queue = ?", key + q)},
        orphans_running=lambda q: bool(rows(path, "SELECT 1 FROM jobs WHERE queue = ? AND started_ms IS NOT NULL", key + q)),
    ))
