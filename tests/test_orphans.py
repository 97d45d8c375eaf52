"""What a worker's death costs the jobs it held, with real processes killed by SIGKILL: only a
run whose start was recorded counts an attempt. Jobs that were prefetched and never started
go back with their attempts unchanged (as orphans: each runs alone next, its start recorded
first), so two crashes in a row fail no bystander, while a job that is running each time its
worker dies is counted from its second run and fails with LeaseExpired once its attempts are
used up, keeping the error its earlier attempt raised.

The worker processes import this module (the ``spawn`` fixture) for the job classes below."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from .conftest import eventually

JOBS = ["tests.test_orphans"]


class Hold(fastjobs.Job[dict, dict]):
    """Waits while the file ``payload["gate"]`` exists (the test holds a worker busy with it),
    raises first if ``payload["raise_first"]`` and this is the first attempt; returns how it
    was run."""

    name = "orphans.Hold"

    def process(self, payload: dict) -> dict:
        if payload.get("raise_first") and self.attempt == 0:
            raise ValueError("the first attempt fails")
        while os.path.exists(payload["gate"]):
            time.sleep(0.02)
        return {"attempt": self.attempt, "redelivered": self.redelivered, "pid": os.getpid()}


@pytest.fixture
def spawn(spawn_worker: Any) -> Any:
    """``spawn_worker`` for this module's jobs (it reaps what a failed test left running)."""
    return lambda *args: spawn_worker(*args, modules=JOBS)


def kill(worker: Any) -> str:
    worker.proc.send_signal(signal.SIGKILL)
    out: str = worker.output()
    assert worker.proc.returncode == -signal.SIGKILL
    return out


@pytest.mark.timeout(90)
def test_two_crashes_in_a_row_fail_no_bystander_and_count_only_the_run_that_started(spawn: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    n = 200
    # One job held by the gate at the head, 199 behind it; attempts=1: a single counted
    # attempt too many fails a job.
    handles = [Hold.dispatch({"gate": str(gate)}).on_queue("orphans").attempts(1).send() for _ in range(n)]
    first = spawn("--queue", "orphans", "--concurrency", "1", "--prefetch", str(n), "--lease", "1", "--grace", "1")
    eventually(lambda: Queue("orphans").counts()["active"] == n, timeout=30)
    kill(first)  # one job running, 199 prefetched and never started

    second = spawn("--queue", "orphans", "--concurrency", "1", "--prefetch", str(n), "--lease", "1", "--grace", "1")
    # Its scheduler reaps the dead lease; the orphans come back, the first one runs (alone,
    # its start recorded) and holds the worker at the gate again.
    eventually(lambda: Queue("orphans").counts()["stalled"] == n and Queue("orphans").counts()["active"] >= 1, timeout=30)
    time.sleep(0.3)
    out = kill(second)
    # It started exactly one orphan (the one it held), and said so.
    started = re.findall(r"job (\S+) runs again: the worker that held it died", out)
    assert len(started) == 1, out
    victim = next(h for h in handles if h.id == started[0])

    gate.unlink()
    third = spawn("--queue", "orphans", "--concurrency", "4", "--lease", "1")
    with pytest.raises(fastjobs.JobFailed) as e:
        victim.wait_result(timeout=30)
    assert e.value.exc_type == "LeaseExpired"
    assert "stopped renewing its lease while it ran this job" in e.value.message
    assert "attempts are used up (1 of 1 counted)" in e.value.message
    results = [h.wait_result(timeout=30) for h in handles if h is not victim]
    # Not one bystander lost an attempt, though each came back twice.
    assert {r["attempt"] for r in results} == {0}
    assert {r["redelivered"] for r in results} == {True}
    c = Queue("orphans").counts()
    assert (c["completed"], c["failed"], c["waiting"], c["active"]) == (n - 1, 1, 0, 0), c
    third.proc.terminate()
    third.output()


@pytest.mark.timeout(90)
def test_lease_expired_keeps_the_error_an_earlier_attempt_raised(spawn: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    h = Hold.dispatch({"gate": str(gate), "raise_first": True}).on_queue("kept").attempts(2).backoff(0).send()
    w1 = spawn("--queue", "kept", "--lease", "1")
    # Attempt 1 raised (the job waits to run again with its error kept), attempt 2 holds.
    eventually(lambda: Queue("kept").counts()["retried"] == 1 and Queue("kept").counts()["active"] == 1, timeout=30)
    kill(w1)  # during attempt 2: not recorded as started, so not counted
    w2 = spawn("--queue", "kept", "--lease", "1")
    eventually(lambda: Queue("kept").counts()["stalled"] == 1 and Queue("kept").counts()["active"] == 1, timeout=30)
    time.sleep(0.3)
    kill(w2)  # during its run as an orphan: recorded, so counted: 2 of 2
    w3 = spawn("--queue", "kept", "--lease", "1")
    with pytest.raises(fastjobs.JobFailed) as e:
        h.wait_result(timeout=30)
    assert e.value.exc_type == "LeaseExpired" and "(2 of 2 counted)" in e.value.message
    [failed] = Queue("kept").failed()
    assert failed.error["previous"]["type"] == "ValueError"
    assert failed.error["previous"]["message"] == "the first attempt fails"
    assert failed.error["started_at_ms"] > 0 and failed.error["worker"]
    w3.proc.terminate()
    w3.output()
    gate.unlink()


def test_a_retried_job_shows_the_error_of_its_last_attempt_while_it_waits(start_worker: Any, tmp_path: Path) -> None:
    h = Hold.dispatch({"gate": str(tmp_path / "none"), "raise_first": True}).on_queue("wait").attempts(2).backoff(3600).send()
    start_worker(queues=["wait"])
    eventually(lambda: h.status() == "delayed")
    info = h.info()
    assert info.error is not None and info.error["type"] == "ValueError", info
