"""Worker pools (`fastjobs worker --processes N`): real child processes on a real Redis, killed,
recycled, reloaded and stopped with real signals; every run of every job is counted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, Worker

from .apps.pool_jobs import AsyncCount, Count, Hoard, Poison, pids, runs
from .conftest import ROOT, eventually

MODULES = ["tests.apps.pool_jobs"]
SUMMARY = re.compile(r"fastjobs worker: (\d+) completed, (\d+) retried, (\d+) failed, (\d+) handed back, (\d+) stale, "
                     r"(\d+) cancelled in [\d.]+s(?:; children replaced: (\d+) \((.*)\))?")


@pytest.fixture
def pool(spawn_worker: Any) -> Any:
    def start(*args: str, modules: list[str] | None = None, path: str = "") -> Any:
        return spawn_worker("--queue", "pool", *args, modules=modules or MODULES, path=path)

    return start


def children(out: str) -> dict[int, int]:
    """pid -> child number, of every child the pool started (from its log)."""
    return {int(pid): int(n) for n, pid in re.findall(r"child #(\d+) started: pid (\d+)", out)}


def summary(out: str) -> tuple[dict[str, int], str]:
    m = SUMMARY.search(out)
    assert m, f"no summary line in the pool's output:\n{out[-3000:]}"
    names = ("completed", "retried", "failed", "handed_back", "stale", "cancelled")
    return dict(zip(names, (int(x) for x in m.groups()[:6]))), m.group(8) or ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits to be reaped.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z" if Path(f"/proc/{pid}/stat").exists() else True


def completed() -> int:
    return Queue("pool").counts()["completed"]


# ---- crashes ----


@pytest.mark.timeout(90)
def test_sigkilled_child_is_replaced_and_every_job_completes(pool: Any, redis: Any, prefix: str) -> None:
    n = 2000
    Count.dispatch_many([{"sleep": 0.002}] * n)
    # A lease far longer than the test: the jobs of the killed child come back because the
    # pool ends its leases, not because they time out.
    p = pool("--processes", "2", "--concurrency", "2", "--lease", "120")
    eventually(lambda: len(runs(redis, prefix)) >= 300, timeout=30)
    out = p.read()
    scheduler_pid = int(re.search(r"started: pid (\d+) \(runs the scheduler\)", out).group(1))  # type: ignore[union-attr]
    os.kill(scheduler_pid, signal.SIGKILL)
    eventually(lambda: completed() == n, timeout=40)
    ran = runs(redis, prefix)
    assert len(ran) == n
    # Only what the killed child was running (2 handler threads), or had just finished while
    # their acknowledgement was on its way, can have run twice.
    assert sum(ran.values()) - n <= 10, sum(ran.values())
    # Its replacement runs the scheduler: a delayed job still runs.
    later = Count.dispatch({"sleep": 0}).delay(0.3).send()
    later.wait_result(timeout=15)
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    assert p.proc.returncode == 0
    assert len(re.findall(r"\(runs the scheduler\)", out)) == 2, out[-3000:]
    assert f"(pid {scheduler_pid}) killed by SIGKILL" in out
    assert re.search(rf"\(pid {scheduler_pid}\) died holding \d+ job\(s\) of queue 'pool'", out), out[-3000:]
    _, replaced = summary(out)
    assert replaced == "1 killed by SIGKILL"
    assert not any(alive(pid) for pid in children(out))


@pytest.mark.timeout(90)
def test_poison_job_killing_its_child_fails_and_the_rest_complete(pool: Any, redis: Any, prefix: str) -> None:
    Count.dispatch_many([{}] * 200)
    poison = Poison.dispatch({}).attempts(2).send()
    Count.dispatch_many([{}] * 200)
    p = pool("--processes", "2", "--concurrency", "2")
    eventually(lambda: completed() == 400 and poison.status() == "failed", timeout=60)
    with pytest.raises(fastjobs.JobFailed) as e:
        poison.wait_result(timeout=1)
    assert e.value.exc_type == "LeaseExpired"
    ran = runs(redis, prefix)
    assert ran[poison.id] <= 3  # attempts + 1 runs at most (see the README's Reliability)
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    assert f"job {poison.id} was running alone when child #" in out
    _, replaced = summary(out)
    assert re.fullmatch(r"\d exited with code 3", replaced), replaced


# ---- recycling ----


@pytest.mark.timeout(90)
@pytest.mark.parametrize("job", [Count, AsyncCount], ids=["sync", "async"])
def test_recycling_after_n_jobs_loses_and_duplicates_nothing(pool: Any, redis: Any, prefix: str, job: Any) -> None:
    n = 1000
    handles = job.dispatch_many([{}] * n)
    p = pool("--processes", "2", "--concurrency", "4", "--max-jobs-per-child", "100")
    eventually(lambda: completed() == n, timeout=60)
    ran = runs(redis, prefix)
    assert sorted(ran) == sorted(handles) and set(ran.values()) == {1}
    children = len(pids(redis, prefix))
    assert children >= 10  # no child ran more than 100
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    counts, replaced = summary(out)
    assert counts["completed"] == n and counts["stale"] == 0
    recycled = int(re.fullmatch(r"(\d+) recycled after 100 jobs", replaced).group(1))  # type: ignore[union-attr]
    # Every child was recycled but the last of each of the 2 slots: those may still run (their
    # quota reached or not) when the pool stops.
    assert recycled >= children - 2


@pytest.mark.timeout(90)
def test_recycling_by_memory_loses_and_duplicates_nothing(pool: Any, redis: Any, prefix: str) -> None:
    n = 40
    handles = Hoard.dispatch_many([{"mb": 25}] * n)
    p = pool("--processes", "2", "--max-memory-per-child", "200")
    eventually(lambda: completed() == n, timeout=60)
    ran = runs(redis, prefix)
    assert sorted(ran) == sorted(handles) and set(ran.values()) == {1}
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    counts, replaced = summary(out)
    assert counts["completed"] == n
    assert "recycled at" in replaced and "over --max-memory-per-child 200" in out


# ---- signals ----


@pytest.mark.timeout(60)
def test_sigterm_stops_every_child_within_the_grace(pool: Any, redis: Any, prefix: str) -> None:
    n = 40
    Count.dispatch_many([{"sleep": 0.5}] * n)
    p = pool("--processes", "2", "--concurrency", "2", "--grace", "5")
    eventually(lambda: len(runs(redis, prefix)) >= 4)
    sent = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    took = time.monotonic() - sent
    assert p.proc.returncode == 0
    assert took < 5, took  # the running jobs finish (0.5 s), nothing waits for the grace
    assert not any(alive(pid) for pid in children(out))
    c = Queue("pool").counts()
    assert (c["completed"], c["active"], c["completed"] + c["waiting"]) == (len(runs(redis, prefix)), 0, n), c
    assert set(runs(redis, prefix).values()) == {1}


@pytest.mark.timeout(60)
def test_second_signal_stops_the_pool_at_once(pool: Any, redis: Any, prefix: str) -> None:
    Count.dispatch_many([{"sleep": 60}] * 4)
    p = pool("--processes", "2", "--concurrency", "2", "--grace", "60")
    eventually(lambda: len(runs(redis, prefix)) >= 2)
    p.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    p.proc.send_signal(signal.SIGINT)
    out = p.output()
    assert time.monotonic() - sent < 5
    assert p.proc.returncode == 130
    assert not any(alive(pid) for pid in children(out))


@pytest.mark.timeout(60)
def test_sigttin_and_sigttou_add_and_remove_a_child(pool: Any) -> None:
    p = pool("--processes", "1")
    p.wait_for("child #1 started")
    p.proc.send_signal(signal.SIGTTIN)
    out = p.wait_for("child #2 started")
    second = next(pid for pid, n in children(out).items() if n == 2)
    p.proc.send_signal(signal.SIGTTOU)
    p.wait_for(f"child #2 (pid {second}) stopped")
    eventually(lambda: not alive(second))
    p.proc.send_signal(signal.SIGTTOU)  # the last child stays
    p.wait_for("the pool keeps its last child")
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    assert p.proc.returncode == 0
    assert summary(out)[1] == ""  # nothing was replaced


VERSIONED = """
import fastjobs
from tests.resp import Redis
from urllib.parse import urlparse

VERSION = {version}

class Versioned(fastjobs.Job[dict, None]):
    queue = "pool"

    def process(self, payload):
        s = fastjobs.config.settings()
        redis = Redis(urlparse(s.url).port)
        redis("HINCRBY", s.prefix + ":test:runs", self.job_id, 1)
        redis("RPUSH", s.prefix + ":test:versions", VERSION)
"""


def write_module(path: Path, version: Any) -> None:
    path.write_text(textwrap.dedent(VERSIONED.format(version=version)))
    os.utime(path, (time.time() + 1, time.time() + 1))  # a new mtime even within the same second


def import_versioned(tmp_path: Path) -> Any:
    """Writes versioned.py (VERSION = 1) and imports it here, to dispatch its jobs; the worker
    imports its own copy, which the test rewrites."""
    write_module(tmp_path / "versioned.py", 1)
    sys.path.insert(0, str(tmp_path))
    try:
        import versioned  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("versioned", None)
    return versioned


def versions(redis: Any, prefix: str) -> list[int]:
    return [int(v) for v in redis("LRANGE", f"{prefix}:test:versions", 0, -1)]


@pytest.mark.timeout(90)
def test_sighup_reloads_changed_code_while_jobs_flow(pool: Any, redis: Any, prefix: str, tmp_path: Path) -> None:
    versioned = import_versioned(tmp_path)
    p = pool("--processes", "2", "--concurrency", "2", modules=["versioned"], path=str(tmp_path))
    p.wait_for("worker started")
    first = versioned.Versioned.dispatch_many([{}] * 300)
    eventually(lambda: len(versions(redis, prefix)) >= 20)
    write_module(tmp_path / "versioned.py", 2)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_for("imported again")
    eventually(lambda: Queue("pool").counts()["completed"] == 300, timeout=30)
    second = versioned.Versioned.dispatch_many([{}] * 50)
    eventually(lambda: Queue("pool").counts()["completed"] == 350, timeout=30)
    seen = versions(redis, prefix)
    assert seen[0] == 1 and seen[-50:] == [2] * 50, seen
    # New code that does not import: the children keep the code they run.
    (tmp_path / "versioned.py").write_text("raise RuntimeError('half-written code')\n")
    p.proc.send_signal(signal.SIGHUP)
    p.wait_for("the job modules failed to import")
    third = versioned.Versioned.dispatch_many([{}] * 10)
    eventually(lambda: Queue("pool").counts()["completed"] == 360, timeout=30)
    assert versions(redis, prefix)[-10:] == [2] * 10
    ran = runs(redis, prefix)
    assert sorted(ran) == sorted([*first, *second, *third]) and set(ran.values()) == {1}
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    assert "RuntimeError: half-written code" in out
    assert summary(out)[0]["completed"] == 360


@pytest.mark.timeout(90)
def test_reload_flag_restarts_the_children_when_a_file_changes(pool: Any, redis: Any, prefix: str, tmp_path: Path) -> None:
    versioned = import_versioned(tmp_path)
    p = pool("--reload", modules=["versioned"], path=str(tmp_path))
    p.wait_for("worker started")
    p.wait_for(f"watching {os.path.realpath(tmp_path)}")
    time.sleep(0.5)  # the watcher is set up
    write_module(tmp_path / "versioned.py", 2)
    p.wait_for("imported again", timeout=20)
    eventually(lambda: p.read().count("worker started") >= 2)
    versioned.Versioned.dispatch({}).send().wait_result(timeout=15)
    assert versions(redis, prefix) == [2]
    p.proc.send_signal(signal.SIGTERM)
    p.output()
    assert p.proc.returncode == 0


# ---- start methods, sizes and the Python API ----


@pytest.mark.timeout(60)
def test_spawned_children_run_the_jobs(pool: Any, redis: Any, prefix: str) -> None:
    handles = Count.dispatch_many([{}] * 300)
    p = pool("--processes", "2", "--start-method", "spawn")
    eventually(lambda: completed() == 300, timeout=40)
    assert sorted(runs(redis, prefix)) == sorted(handles)
    p.proc.send_signal(signal.SIGTERM)
    out = p.output()
    assert "2 process(es), spawn" in out and summary(out)[0]["completed"] == 300


def test_auto_is_the_usable_cores_honouring_the_cpu_affinity() -> None:
    code = "import os; from fastjobs.pool import usable_cores; os.sched_setaffinity(0, {0}); print(usable_cores())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "1"
    from fastjobs.pool import usable_cores

    assert usable_cores() == min(len(os.sched_getaffinity(0)), os.cpu_count() or 1)


@pytest.mark.timeout(60)
def test_processes_auto_starts_one_child_per_usable_core(pool: Any) -> None:
    from fastjobs.pool import usable_cores

    p = pool("--processes", "auto")
    p.wait_for(f"pool started: {usable_cores()} process(es)")
    eventually(lambda: len(children(p.read())) == usable_cores())
    p.proc.send_signal(signal.SIGTERM)
    p.output()


POOL_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import fastjobs
from tests.apps.pool_jobs import Count
fastjobs.configure({url!r}, prefix={prefix!r})
s = fastjobs.Worker(["pool"], processes=2, concurrency=2, max_jobs_per_child=20).run()
print(json.dumps({{"completed": s.completed, "restarts": s.restarts}}), flush=True)
"""


@pytest.mark.timeout(150)
def test_worker_processes_in_python(redis_server: Any, redis: Any, prefix: str) -> None:
    Count.dispatch_many([{}] * 200)
    proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT.format(root=str(ROOT), url=redis_server.url, prefix=prefix)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        eventually(lambda: completed() == 200, timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)  # generous: a loaded 2-core machine starts and stops processes slowly
    finally:
        proc.kill()
        proc.communicate()  # reaped and its pipe closed, whatever happened above
    import json

    s = json.loads(out.strip().splitlines()[-1])
    # Every child's last report reached the parent: all counted, each replacement a recycling.
    assert s["completed"] == 200 and set(s["restarts"]) == {"recycled after 20 jobs"} and s["restarts"]["recycled after 20 jobs"] >= 6
    assert set(runs(redis, prefix).values()) == {1}


def test_a_pool_runs_in_the_main_thread_only() -> None:
    import threading

    raised: list[BaseException] = []

    def run() -> None:
        try:
            Worker(["pool"], processes=2).run()
        except BaseException as e:  # noqa: BLE001 - the test reads it
            raised.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert len(raised) == 1 and isinstance(raised[0], RuntimeError), raised
    assert "a worker pool runs in the main thread" in str(raised[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(processes=0), "processes must be a whole number of at least 1, or 'auto', got 0"),
        (dict(processes=-2), "processes must be a whole number of at least 1, or 'auto', got -2"),
        (dict(processes="all"), "processes must be a whole number of at least 1, or 'auto', got 'all'"),
        (dict(processes=2, max_jobs_per_child=0), "max_jobs_per_child must be a whole number of at least 1, got 0"),
        (dict(processes=2, max_memory_per_child=0), "max_memory_per_child must be a number of MB above 0, got 0"),
        (dict(processes=2, max_memory_per_child=1), "max_memory_per_child of 1 MB is below the memory a worker process starts"),
        (dict(max_jobs_per_child=10), "max_jobs_per_child and max_memory_per_child recycle the children of a pool"),
        (dict(processes=2, start_method="forkserver"), "start_method must be 'fork' or 'spawn', got 'forkserver'"),
    ],
)
def test_bad_pool_settings_raise_a_clear_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Worker(["pool"], **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--processes", "0"], "argument -p/--processes: must be a whole number of at least 1, or auto, got '0'"),
        (["--processes", "-1"], "argument -p/--processes: must be a whole number of at least 1, or auto, got '-1'"),
        (["--processes", "lots"], "argument -p/--processes: must be a whole number of at least 1, or auto, got 'lots'"),
        (["--processes", "2", "--max-jobs-per-child", "0"], "argument --max-jobs-per-child: must be a whole number of at least 1"),
        (["--processes", "2", "--max-memory-per-child", "-5"], "argument --max-memory-per-child: must be a number of MB above 0"),
        (["--processes", "2", "--max-memory-per-child", "1"], "--max-memory-per-child of 1 MB is below the memory a worker process"),
        (["--max-jobs-per-child", "10"], "--max-jobs-per-child and --max-memory-per-child recycle the children of a pool: "
                                         "give --processes too"),
    ],
)
def test_bad_pool_flags_fail_the_command_naming_the_flag(redis_server: Any, args: list[str], message: str) -> None:
    env = dict(os.environ, FASTJOBS_URL=redis_server.url, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "fastjobs", "worker", *MODULES, *args], env=env, cwd=str(ROOT),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert "pool started" not in r.stderr


def test_module_failing_to_import_fails_the_command_before_any_child(redis_server: Any, tmp_path: Path) -> None:
    (tmp_path / "broken_jobs.py").write_text("import fastjobs\nraise RuntimeError('no database configured')\n")
    env = dict(os.environ, FASTJOBS_URL=redis_server.url, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    r = subprocess.run([sys.executable, "-m", "fastjobs", "worker", "broken_jobs", "--processes", "2"], env=env, cwd=str(ROOT),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "Traceback (most recent call last)" in r.stderr and "RuntimeError: no database configured" in r.stderr
    assert "pool started" not in r.stderr and "child #" not in r.stderr
