"""The SQLite store (sqlite:///path.db): one file shared by the processes of one machine, kept
across restarts, refused with a reason when it cannot serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, config

from .apps.jobs import Echo


def test_a_worker_process_drains_what_this_process_dispatched(tmp_path: Path, spawn_worker: Any, prefix: str) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    fastjobs.configure(url, prefix=prefix, connection="file")
    handles = Echo.dispatch_many(list(range(500)), connection="file")
    single = Echo.dispatch("one").on_connection("file").send()
    w = spawn_worker("--queue", "default", url=url)
    assert single.wait_result(timeout=30) == "one"
    assert handles.handle(499).wait_result(timeout=30) == 499
    assert Queue(connection="file").counts()["completed"] == 501
    w.proc.terminate()
    assert "0 stale" in w.output()


def test_jobs_outlive_the_process_that_opened_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kept.db"
    fastjobs.configure(url, connection="file")
    h = Echo.dispatch("kept").on_connection("file").send()
    config.forget("file")
    fastjobs.configure(url, connection="again")
    assert Queue(connection="again").counts()["waiting"] == 1
    assert Queue(connection="again").cancel(h.id) == "waiting"


def test_a_file_that_cannot_serve_is_refused_with_its_name(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("not a database, " * 100)
    with pytest.raises(ValueError, match=r"notes\.txt"):
        fastjobs.configure(f"sqlite:///{other}", connection="bad")
    with pytest.raises(fastjobs.FastJobsError, match="missing-dir"):
        fastjobs.configure(f"sqlite:///{tmp_path}/missing-dir/x.db", connection="bad")


def test_the_events_stream_is_kept_in_the_file_for_every_process(tmp_path: Path, spawn_worker: Any, prefix: str) -> None:
    url = f"sqlite:///{tmp_path}/ev.db"
    fastjobs.configure(url, prefix=prefix, connection="file")
    q = Queue(connection="file")

    def rows() -> int:
        """The entries kept (the file is not opened here with Python's own SQLite: two SQLite
        libraries in one process release each other's file locks)."""
        return len({e.id.partition("/")[0] for e in q.events("0", timeout=0)})

    Echo.dispatch_many(list(range(50)), connection="file")
    assert rows() == 0  # off: nothing written
    q.set_events(True)
    handles = Echo.dispatch_many(list(range(300)), connection="file")
    w = spawn_worker("--queue", "default", url=url)  # another process tells the stream
    seen: dict[str, list[str]] = {}
    done = 0
    for e in q.events("0", timeout=20):
        seen.setdefault(e.job_id, []).append(e.type)
        done += e.type == "completed"
        if done == 350:
            break
    assert all(seen[h] == ["waiting", "active", "completed"] for h in handles)
    assert rows() < 350 * 3  # an entry per operation and kind, not per job
    w.proc.terminate()
    w.proc.wait()
    # Trimmed to about `keep` as it is written.
    q.set_events(True, keep=5)
    for n in range(200):
        Echo.dispatch(n).on_connection("file").send()
    assert rows() <= 5 + 64
