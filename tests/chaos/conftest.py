"""Fixtures of the fault tests: worker processes that log to files, the ledger of runs, a TCP
proxy, a restartable Redis with an append-only file, the audit every scenario ends with, and
the figures table that `make chaos` prints at the end.

Sizes: each scenario runs short in the default test run and long under the ``chaos`` marker
(`make chaos`, which runs ``-m chaos``; pyproject's addopts leave those out otherwise).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from ..conftest import ROOT, RedisServer
from ..resp import Redis
from .jobs import Run, runs
from .proxy import Proxy
from .servers import Fsync, PersistentPostgres, PersistentRedis

SUMMARY = re.compile(r"fastjobs worker: (\d+) completed, (\d+) retried, (\d+) failed, (\d+) handed back, (\d+) stale, \d+ cancelled in [\d.]+s")
RUNS_AGAIN = re.compile(r"job (\S+) runs again: the worker that held it died while it may have been running it")
LOST_LEASES = "lease(s) expired before this worker renewed them"


def sizes(short: Any, long: Any) -> Any:
    """Parametrizes a test's ``size``: the short one in every run, the long one under the
    ``chaos`` marker only (with a longer timeout)."""
    return pytest.mark.parametrize(
        "size", [pytest.param(short, id="short"), pytest.param(long, id="long", marks=[pytest.mark.chaos, pytest.mark.timeout(900)])]
    )


@dataclass
class Summary:
    completed: int
    retried: int
    failed: int
    handed_back: int
    stale: int


class Worker:
    """``python -m fastjobs worker tests.chaos.jobs`` in a process of its own, its output (log
    lines and the summary line) in a file: thousands of warnings would fill a pipe nobody
    reads and block the worker."""

    def __init__(self, url: str, prefix: str, ledger_port: int, log: Path, args: list[str], store_prefix: str | None = None) -> None:
        env = dict(os.environ, FASTJOBS_URL=url, FASTJOBS_PREFIX=store_prefix or prefix, FASTJOBS_CHAOS_LEDGER=str(ledger_port),
                   FASTJOBS_CHAOS_RUNS=prefix, PYTHONPATH=str(ROOT))
        self.log_path = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "fastjobs", "worker", "tests.chaos.jobs", *args],
                                     cwd=str(ROOT), env=env, stdout=self._out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.killed = False  # ended by the test (SIGKILL) or by its own job (os._exit): no summary
        self.summary: Summary | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text()

    def orphans_logged(self) -> list[str]:
        """Ids this worker logged as running again (its earlier worker died)."""
        return RUNS_AGAIN.findall(self.log())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self.killed = True
        self.finish()

    def died(self) -> None:
        """It ended by itself (a job killed it)."""
        self.killed = True
        self.finish()

    def stop(self, timeout: float = 60) -> Summary:
        """SIGTERM (a graceful stop), then its summary line."""
        from ..conftest import eventually

        eventually(lambda: "worker started" in self.log() or not self.alive(), timeout=30)  # its signal handlers are in place
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.finish()
        out = self.log()
        assert code == 0, f"worker {self.pid} exited with {code}:\n{out[-4000:]}"
        m = SUMMARY.search(out)
        assert m, f"no summary line in the output of worker {self.pid}:\n{out[-4000:]}"
        self.summary = Summary(*(int(x) for x in m.groups()))
        return self.summary

    def finish(self) -> None:
        if not self._out.closed:
            self._out.close()


@pytest.fixture
def ledger(redis_server: RedisServer) -> Redis:
    """The run ledger's Redis: the test run's own server, never the one under test."""
    return Redis(redis_server.port)


@pytest.fixture
def workers(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[Any]:
    """``start(*args, url=..., store_prefix=...)`` starts a worker process on ``url`` (default:
    the test run's Redis) under ``store_prefix`` (default: the test's prefix, which always
    names its runs in the ledger); ``start.all`` lists every worker started. Teardown kills
    the ones still running."""
    started: list[Worker] = []

    def start(*args: str, url: str | None = None, store_prefix: str | None = None) -> Worker:
        w = Worker(url or redis_server.url, prefix, redis_server.port, tmp_path / f"worker-{len(started)}.log", list(args), store_prefix)
        started.append(w)
        return w

    start.all = started  # type: ignore[attr-defined]
    yield start
    for w in started:
        if w.alive():
            w.proc.kill()
            w.proc.wait()
        w.finish()


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[Any]:
    """``proxy(port=None)``: a Proxy in front of that port (default: the test run's Redis)."""
    made: list[Proxy] = []

    def make(port: int | None = None) -> Proxy:
        p = Proxy(port or redis_server.port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def durable_postgres() -> Iterator[PersistentPostgres]:
    """A PersistentPostgres of the test's own (the test run's PostgreSQL is never crashed)."""
    server = PersistentPostgres()
    yield server
    server.remove()


@pytest.fixture
def persistent_redis() -> Iterator[Any]:
    """``persistent_redis(fsync)``: a restartable PersistentRedis, stopped and removed after."""
    made: list[PersistentRedis] = []

    def make(fsync: Fsync = "always") -> PersistentRedis:
        s = PersistentRedis(fsync=fsync)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
        s.remove()


# ---- the audit ----


@dataclass
class Audit:
    """What the ledger and the workers say about a scenario's jobs."""

    jobs: int
    runs: list[Run]
    duplicates: int
    by_job: dict[str, list[Run]] = field(default_factory=dict)


def audit(queue: str, sent: list[Any], ledger: Redis, prefix: str, workers: list[Worker], *, extra: int = 0, failed: int = 0) -> Audit:
    """The checks every scenario ends with, once its queue has drained:

    - nothing acknowledged is lost: every job whose dispatch returned (``sent``, handles) has
      completed, and ran (the ledger has it);
    - the queue's counts are exact: completed = the jobs in Redis (``sent`` plus ``extra``
      dispatches that raised but had landed), ``failed`` as expected, nothing left waiting,
      delayed or active;
    - no job ran twice unless a lease truly expired: each run after a job's first is a
      redelivery the handler saw (``self.redelivered``), which the worker that ran it logged as
      "runs again" (a worker killed right after may not have written its log yet); there are no
      more of them than records reaped (``stalled``); a surviving worker logged exactly the
      redeliveries it ran;
    - every surviving worker's summary adds up: completed + retried + failed + stale = the runs
      it made.
    """
    assert {h.status() for h in sent} == {"completed"}, Counter(h.status() for h in sent)
    all_runs = runs(ledger, prefix)
    by_job: dict[str, list[Run]] = defaultdict(list)
    for r in all_runs:
        by_job[r.job_id].append(r)
    missing = [h.id for h in sent if h.id not in by_job]
    assert not missing, f"{len(missing)} completed job(s) never ran: {missing[:10]}"

    c = Queue(queue).counts()
    total = len(sent) + extra
    assert (c["completed"], c["failed"], c["waiting"], c["delayed"], c["active"]) == (total - failed, failed, 0, 0, 0), (c, total)
    assert len(by_job) == total, f"{len(by_job)} jobs ran, {total} were dispatched"

    pids = {w.pid: w for w in workers}
    logged = {w.pid: Counter(w.orphans_logged()) for w in workers}
    duplicates = 0
    for job_id, rs in by_job.items():
        duplicates += len(rs) - 1
        explained = [r for r in rs if r.redelivered and (logged[r.pid][job_id] > 0 or pids[r.pid].killed)]
        assert len(explained) >= len(rs) - 1, f"job {job_id} ran {len(rs)} times, {len(explained)} of them logged redeliveries: {rs}"
    assert duplicates <= c["stalled"], f"{duplicates} duplicate runs, but only {c['stalled']} records were reaped"
    for w in workers:
        if w.killed:
            continue
        mine = [r for r in all_runs if r.pid == w.pid]
        assert Counter(r.job_id for r in mine if r.redelivered) == logged[w.pid], f"worker {w.pid} logged other redeliveries than it ran"
        s = w.summary
        assert s is not None, f"worker {w.pid} was not stopped"
        assert s.completed + s.retried + s.failed + s.stale == len(mine), (w.pid, s, len(mine))
    return Audit(total, all_runs, duplicates, dict(by_job))


# ---- figures: printed at the end of the run ----

_FIGURES: list[dict[str, Any]] = []


@pytest.fixture
def figures(request: Any) -> Any:
    """``figures(jobs=, lost=, duplicates=, recovery_s=, **more)``: one row of the table."""

    def add(**row: Any) -> None:
        _FIGURES.append({"test": request.node.name, **row})

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    tr = terminalreporter
    tr.section("faults, measured")
    for row in _FIGURES:
        rest = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "test")
        tr.write_line(f"{row['test']}: {rest}")


def counts(queue: str) -> dict[str, int]:
    """``Queue.counts()``, or {} when the call fails for the connection: after a restart of
    Redis, the first call on a connection that broke while idle fails, and the next opens it
    again."""
    try:
        return dict(Queue(queue).counts())
    except fastjobs.ConnectionError:
        return {}


def drained(queue: str, total: int, timeout: float = 120.0) -> float:
    """Waits until ``total`` jobs of ``queue`` are completed or failed and nothing is left to
    run; returns the monotonic time it saw that."""
    from ..conftest import eventually

    def done() -> bool:
        c = counts(queue)
        return bool(c) and c["completed"] + c["failed"] >= total and c["waiting"] + c["active"] + c["delayed"] == 0

    eventually(done, timeout=timeout, interval=0.05)
    return time.monotonic()


def connect(url: str, prefix: str, **settings: Any) -> None:
    """Points this process's fastjobs (producers, Queue) at ``url``."""
    fastjobs.configure(url, prefix=prefix, **settings)
