"""The SQLite store under faults: worker processes sharing one database file SIGKILLed
mid-drain, again and again (scenario a of test_worker_faults.py, on a file): nothing
acknowledged lost, every duplicate run a logged redelivery of a reaped lease."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..resp import Redis
from .conftest import connect, sizes
from .scenarios import kill_mid_drain

READ = ("import json, sqlite3, sys; db = sqlite3.connect(sys.argv[1], timeout=10); "
        "print(json.dumps(db.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall()))")


def rows(path: Path, query: str, *args: Any) -> list[Any]:
    """Rows read by another process: this one has the file open through fastjobs, and a second
    SQLite library closing the file in the same process would drop the first one's locks
    (POSIX locks belong to the process, not to a connection)."""
    out = subprocess.run([sys.executable, "-c", READ, str(path), query, json.dumps(args)], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


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
