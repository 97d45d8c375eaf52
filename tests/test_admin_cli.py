"""The operator's commands (``fastjobs queues``, ``inspect``, ``workers``, ``failed``, ``retry``,
``delete``, ``purge``, ``empty``, ``pause``, ``resume``, ``cancel``, ``job``) run as real
processes against the test Redis and real workers; the worker registry; JSON log lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue
from tests.apps.admin_jobs import OpsBoom, OpsWork
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["tests.apps.admin_jobs"]


@pytest.fixture
def cli(redis_server: Any, prefix: str) -> Any:
    env = dict(os.environ, FASTJOBS_URL=redis_server.url, FASTJOBS_PREFIX=prefix, PYTHONPATH=str(ROOT))

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fastjobs", *args], cwd=str(ROOT), env=env, input=stdin, capture_output=True,
                              text=True, timeout=60)

    return run


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_queue_worked_by_a_worker_is_listed_inspected_and_its_failed_jobs_handled(cli: Any, spawn_worker: Any) -> None:
    done = [OpsWork.dispatch(i).send() for i in range(3)]
    bad = [OpsBoom.dispatch(i).send() for i in range(2)]
    worker = spawn_worker("-q", "ops", "--registry-interval", "0.2", "--log-format", "json", modules=MODULES)
    eventually(lambda: Queue("ops").counts()["failed"] == 2 and Queue("ops").counts()["completed"] == 3)

    (ops,) = [q for q in as_json(cli("queues", "--json")) if q["name"] == "ops"]
    assert ops["counts"] == {"waiting": 0, "delayed": 0, "active": 0, "failed": 2, "completed": 3, "retried": 0, "stalled": 0}
    assert ops["paused"] is False and ops["limits"] == {"rate": None, "per": None, "concurrency": None}
    table = cli("queues")
    assert table.stdout.splitlines()[0].split()[:3] == ["QUEUE", "WAITING", "DELAYED"]
    assert any(line.split()[0] == "ops" for line in table.stdout.splitlines()[1:])

    Queue("ops").set_limits(rate=50, per="1s")
    inspected = as_json(cli("inspect", "ops", "--json", "--sample", "0.1"))
    assert inspected["name"] == "ops" and inspected["counts"]["failed"] == 2
    assert inspected["limits"] == {"rate": 50, "per": 1.0, "concurrency": None}
    assert set(inspected["rates"]) == {"completed", "failed"} and set(inspected["worker_rates"]) == {"completed", "failed"}
    assert [w["pid"] for w in inspected["workers"]] == [worker.proc.pid]
    text = cli("inspect", "ops", "--sample", "0")
    assert text.returncode == 0 and "limits 50/1s" in text.stdout and str(worker.proc.pid) in text.stdout
    refused(cli("inspect", "nope"), 1, "no queue 'nope'")
    refused(cli("inspect", "bad name!"), 2, "invalid queue name")

    listed = as_json(cli("failed", "ops", "--json"))
    assert sorted(f["id"] for f in listed) == sorted(h.id for h in bad)
    assert {(f["name"], f["error_type"]) for f in listed} == {("OpsBoom", "ValueError")}
    assert {f["error_message"] for f in listed} == {"boom 0", "boom 1"}
    assert len(as_json(cli("failed", "ops", "--json", "--limit", "1"))) == 1
    assert bad[0].id in cli("failed", "ops").stdout
    shown = as_json(cli("failed", "ops", "--show", bad[0].id, "--json"))
    assert shown["error_type"] == "ValueError" and "ValueError: boom 0" in shown["traceback"]
    assert "ValueError: boom 0" in cli("failed", "ops", "--show", bad[0].id).stdout
    refused(cli("failed", "ops", "--show", "no-such-job"), 1, "no job 'no-such-job'")
    refused(cli("failed", "ops", "--show", done[0].id), 1, "is completed, not failed")
    refused(cli("failed", "ops", "--limit", "0"), 2, "--limit")

    job = as_json(cli("job", "ops", done[1].id, "--json"))
    assert job["state"] == "completed" and job["result"] == 1 and job["logs"] == []
    assert as_json(cli("job", "ops", bad[1].id, "--json"))["error"]["message"] == "boom 1"
    refused(cli("job", "ops", "no-such-job", "--json"), 1, "no job 'no-such-job'")

    # Retried jobs fail again on the live worker: one by id, then all.
    assert cli("retry", "ops", bad[0].id).returncode == 0
    eventually(lambda: Queue("ops").counts()["failed"] == 2 and bad[0].status() == "failed")
    refused(cli("retry", "ops", done[0].id), 1, "not failed")
    refused(cli("retry", "ops", "no-such-job"), 1, "no job")
    refused(cli("retry", "ops"), 2, "--all")
    all_retried = cli("retry", "ops", "--all")
    assert all_retried.returncode == 0 and "retried 2 failed job(s)" in all_retried.stdout
    eventually(lambda: Queue("ops").counts()["failed"] == 2)

    # The registry: the worker's counts move as it runs jobs.
    (entry,) = as_json(cli("workers", "--json"))
    assert entry["pid"] == worker.proc.pid and entry["queues"] == ["ops"] and entry["concurrency"] == 1 and entry["alive"]
    assert entry["host"] and entry["version"] == fastjobs.__version__ and entry["pool"] is None
    before = entry["completed"]
    OpsWork.dispatch("more").send()
    eventually(lambda: fastjobs.workers()[0].completed == before + 1)
    assert fastjobs.workers(queue="elsewhere") == []
    assert str(worker.proc.pid) in cli("workers").stdout

    assert cli("delete", "ops", bad[1].id).returncode == 0
    refused(cli("delete", "ops", "no-such-job"), 1, "no job")
    purged = cli("purge", "ops")
    assert purged.returncode == 0 and "deleted 1 failed job(s)" in purged.stdout
    assert as_json(cli("failed", "ops", "--json")) == []

    # A clean stop takes the worker out of the registry; its log lines were JSON.
    worker.proc.send_signal(signal.SIGTERM)
    out = worker.output()
    assert fastjobs.workers() == []
    assert as_json(cli("workers", "--json")) == []
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    (failure,) = [r for r in records if r.get("job_id") == bad[1].id and "failed for good" in r["message"]][:1]
    assert failure["job_name"] == "OpsBoom" and failure["queue"] == "ops" and failure["level"] == "WARNING"
    started = [r for r in records if r["message"].startswith("worker started")]
    assert started and "job_id" not in started[0]


def test_controls_of_a_queue_without_a_worker(cli: Any) -> None:
    waiting = [OpsWork.dispatch(i).send() for i in range(3)]
    delayed = OpsWork.dispatch("later").delay(600).send()

    assert "paused" in cli("pause", "ops").stdout
    assert "was paused already" in cli("pause", "ops").stdout
    assert as_json(cli("inspect", "ops", "--json", "--sample", "0"))["paused"] is True
    assert "resumed" in cli("resume", "ops").stdout
    assert "was not paused" in cli("resume", "ops").stdout
    refused(cli("pause", "nope"), 1, "nope")

    cancelled = cli("cancel", "ops", waiting[0].id)
    assert cancelled.returncode == 0 and "was waiting" in cancelled.stdout
    assert waiting[0].status() == "cancelled"
    refused(cli("cancel", "ops", waiting[0].id), 1, "cancelled already")
    refused(cli("cancel", "ops", "no-such-job"), 1, "no job")

    kept = cli("empty", "ops", stdin="n\n")
    assert kept.returncode == 1 and "[y/N]" in kept.stdout and Queue("ops").counts()["waiting"] == 2
    assert cli("empty", "ops").returncode == 1  # no answer: nothing done
    emptied = cli("empty", "ops", stdin="y\n")
    assert emptied.returncode == 0 and "cancelled 3 job(s)" in emptied.stdout
    assert delayed.status() == "cancelled" and Queue("ops").counts()["waiting"] == 0
    OpsWork.dispatch("again").send()
    assert "cancelled 1 job(s)" in cli("empty", "ops", "--yes").stdout
    refused(cli("empty", "nope", "--yes"), 1, "no queue 'nope'")
    refused(cli("purge", "nope"), 1, "no queue 'nope'")
    assert "no workers" in cli("workers").stdout


def test_a_killed_worker_is_shown_gone_and_a_pool_lists_its_children(cli: Any, spawn_worker: Any) -> None:
    killed = spawn_worker("-q", "ops", "--registry-interval", "0.2", modules=MODULES)
    eventually(lambda: [w.pid for w in fastjobs.workers()] == [killed.proc.pid])
    killed.proc.kill()
    killed.proc.wait()
    gone = eventually(lambda: [w for w in as_json(cli("workers", "--json")) if not w["alive"]])
    assert [w["pid"] for w in gone] == [killed.proc.pid]
    assert "gone" in cli("workers").stdout

    # Spawned children log JSON as their pool does, and each keeps an entry naming the pool.
    pool = spawn_worker("-q", "ops", "-p", "2", "--start-method", "spawn", "--log-format", "json", "--registry-interval", "0.2",
                        modules=MODULES)
    children = eventually(lambda: [w for w in fastjobs.workers() if w.alive and w.pool == pool.proc.pid][1:] and
                          [w for w in fastjobs.workers() if w.alive])
    assert len({w.pid for w in children}) == 2 and {w.pool for w in children} == {pool.proc.pid}
    assert {w.id for w in asyncio.run(fastjobs.workers_async(queue="ops"))} == {w.id for w in fastjobs.workers()}
    pool.proc.send_signal(signal.SIGTERM)
    out = pool.output()
    assert [w.pid for w in fastjobs.workers()] == [killed.proc.pid]  # only the killed one, gone
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len([r for r in records if r["message"].startswith("worker started")]) == 2
    assert not [line for line in out.splitlines() if " INFO fastjobs" in line]  # no text lines from the children


def test_worker_start_checks(cli: Any, spawn_worker: Any) -> None:
    bad_level = cli("worker", *MODULES, "--log-level", "LOUD")
    assert bad_level.returncode == 2 and "--log-level: must be one of DEBUG" in bad_level.stderr
    assert cli("worker", *MODULES, "--log-format", "xml").returncode == 2
    assert cli("worker", *MODULES, "--registry-interval", "0").returncode == 2
    elsewhere = spawn_worker("-q", "elsewhere", modules=MODULES)
    out = elsewhere.wait_for("worker started")
    assert "OpsBoom -> ops, OpsWork -> ops" in out
    assert "redis://127.0.0.1" in out and "queues ['elsewhere']" in out
    elsewhere.proc.send_signal(signal.SIGTERM)
    elsewhere.output()


def test_setup_logging_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        fastjobs.setup_logging("LOUD")
    with pytest.raises(ValueError, match="format must be"):
        fastjobs.setup_logging("INFO", "xml")
