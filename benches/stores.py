"""W1-W5 on the stores beside Redis: in process (memory://), SQLite and PostgreSQL.

    python benches/bench.py --store memory|sqlite|postgres [--quick] [--only W1,W2,...]

Every measurement runs in a fresh child process (`python benches/stores.py --child ...`) on a
fresh store: a new memory:// name, a new SQLite file in a temporary folder, a new database on a
throwaway PostgreSQL server (rust/store/postgres/testserver.sh, fsync off as in the tests).
Where the worker runs:

- memory: a `Worker` thread in the producer's process (the store is that process's memory);
- sqlite, postgres: a `fastjobs worker` process, as on Redis.

Workloads, and what changes from Redis:

- W1: `dispatch_many` of 1M jobs from a list, then 10M from a generator with the producer's
  peak RSS (memory: the generator is left out, its RSS would be the store's jobs, see W4);
- W2: one worker drains 1M no-op jobs, sync and async handlers, rate from 1% to 100%, the CPU
  per job of the worker process and (PostgreSQL) of the server's processes; the no-op adds 1
  to a counter in a shared memory file, read to time the drain (Redis's run polls
  Queue.counts(), which scans the jobs on PostgreSQL);
- W3: dispatch -> handler start, one idle worker (4 handler threads), 1,000 sequential jobs;
  the handler sends its start time over UDP to the producer (no Redis to RPUSH to);
- W4: what a waiting job takes: memory, the process's RSS; SQLite, the file (and its WAL)
  after a checkpoint; PostgreSQL, `pg_database_size`; each after - before, divided by n;
- W5: 200 jobs delayed 2 s, lateness of their start (UDP as W3). The W5+ spread of Redis
  (benches/lateness.py) starts its own redis-server and is left out.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import mmap
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable

# One module per handler kind (a worker whose jobs are all async runs them on its event loop),
# each with the latency and lateness jobs, whose handlers report their start over UDP. The
# no-op adds 1 to a counter in a shared memory file, which times the drain: Queue.counts()
# scans the queue's rows on PostgreSQL (a count per state), too dear to poll on 1M jobs.
COMMON = """
import mmap, os, socket, threading, time
import fastjobs

_to = ("127.0.0.1", int(os.environ.get("BENCH_UDP_PORT") or 9))
_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_lock, _done = threading.Lock(), []

def _bump():
    with _lock:
        if not _done:
            f = open(os.environ["BENCH_COUNTER"], "r+b")
            _done.append(memoryview(mmap.mmap(f.fileno(), 8)).cast("Q"))
        _done[0][0] += 1
"""
JOBS = {
    "sync": COMMON + """
class BenchLat(fastjobs.Job[dict, None]):
    queue = "bench"
    def process(self, p):
        _udp.sendto(f"{p['i']} {time.time()!r}".encode(), _to)

class BenchNoop(fastjobs.Job[dict, None]):
    queue = "bench"
    def process(self, p): _bump()
""",
    # Every job of it async (BenchLat too), as benches/bench.py's: the worker runs them on its
    # event loop. With one sync job among them, the sync pullers (one thread per unit of
    # concurrency) would hand each async job over to the loop.
    "async": COMMON + """
class BenchLat(fastjobs.Job[dict, None]):
    queue = "bench"
    async def process(self, p):
        _udp.sendto(f"{p['i']} {time.time()!r}".encode(), _to)

class BenchNoop(fastjobs.Job[dict, None]):
    queue = "bench"
    async def process(self, p): _bump()
""",
}

NOT_APPLICABLE = {
    ("memory", "generator_10M"): "the store is the producer's own memory: its peak RSS would be the 10M jobs (W4 gives a job's bytes)",
    ("memory", "W5_spread"): "benches/lateness.py runs on Redis only",
    ("sqlite", "W5_spread"): "benches/lateness.py runs on Redis only",
    ("postgres", "W5_spread"): "benches/lateness.py runs on Redis only",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds of a process (user + system, all threads; with ``children``, also of its
    children that have ended), from /proc."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a server: its main process (with its ended children) and the live
    children (PostgreSQL's backends)."""
    total = proc_cpu_s(root, children=True)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(f[1]) == root:
                    total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError):
                pass
    return total


# ---------------------------------------------------------------------------------------------
# The stores


class Store:
    """Where one measurement's jobs go: ``fresh()`` gives the URL of an empty store."""

    name = "?"
    remote = True  # the worker runs in a process of its own

    def fresh(self) -> str:
        raise NotImplementedError

    def version(self) -> str:
        return ""

    def size(self, url: str) -> int:
        """Bytes the store takes now (W4)."""
        raise NotImplementedError

    def server_pid(self) -> int | None:
        return None

    def stop(self) -> None:
        pass


class MemoryStore(Store):
    name = "memory"
    remote = False

    def fresh(self) -> str:
        return f"memory://b{uuid.uuid4().hex[:12]}"

    def size(self, url: str) -> int:
        gc.collect()
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class SqliteStore(Store):
    name = "sqlite"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fastjobs-bench-sqlite-"))
        self.count = 0

    def fresh(self) -> str:
        self.count += 1
        for old in self.dir.iterdir():  # one file at a time on disk
            old.unlink()
        return f"sqlite:///{self.dir}/bench{self.count}.db"

    def version(self) -> str:
        """The SQLite fastjobs builds in (rusqlite's bundled copy): its crate's version."""
        lock = (ROOT / "Cargo.lock").read_text().split("\n[[package]]\n")
        crate = next((p for p in lock if p.startswith('name = "libsqlite3-sys"')), "")
        return f"bundled by libsqlite3-sys {crate.split('version = ')[1].split()[0].strip(chr(34))}" if crate else "bundled"

    def size(self, url: str) -> int:
        path = url.removeprefix("sqlite://")
        if os.path.exists(path):
            try:
                with sqlite3.connect(path, timeout=10) as db:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    def stop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresStore(Store):
    """A throwaway PostgreSQL server (the tests' testserver.sh), a new database per measurement."""

    name = "postgres"
    SCRIPT = ROOT / "rust" / "store" / "postgres" / "testserver.sh"

    def __init__(self, owner: int | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fastjobs-bench-pg-"))
        subprocess.run(["sh", str(self.SCRIPT), "start", str(self.dir), str(self.port), str(owner or os.getpid())], check=True)
        self.count = 0
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: float(p.parent.name))
        self.psql = str(bindir[-1] / "psql") if bindir else "psql"

    def sql(self, query: str, db: str = "postgres") -> str:
        out = subprocess.run([self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-Atqc", query],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def url_of(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def fresh(self, init: bool = True) -> str:
        """A new empty database (the last one dropped), with fastjobs' schema if ``init``."""
        self.count += 1
        db = f"bench{self.count}"
        if self.count > 1:
            self.sql(f"DROP DATABASE IF EXISTS bench{self.count - 1} WITH (FORCE)")
        self.sql(f"CREATE DATABASE {db}")
        url = self.url_of(db)
        if not init:
            return url
        init = subprocess.run([PY, "-m", "fastjobs", "db", "init", url], capture_output=True, text=True)
        if init.returncode != 0:
            raise RuntimeError(f"fastjobs db init: {(init.stderr or init.stdout).strip()[-300:]}")
        return url

    def version(self) -> str:
        return self.sql("SHOW server_version")

    def size(self, url: str) -> int:
        return int(self.sql("SELECT pg_database_size(current_database())", db=url.rsplit("/", 1)[1]))

    def server_pid(self) -> int | None:
        return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def restart(self) -> None:
        """Restarts the server with the options it had (after an ALTER SYSTEM that needs it)."""
        pg_ctl = str(Path(self.psql).parent / "pg_ctl")
        cmd = [pg_ctl, "-D", str(self.dir / "data"), "-w", "-l", str(self.dir / "server.log"), "restart"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run(["sh", str(self.SCRIPT), "stop", str(self.dir)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


STORES = {"memory": MemoryStore, "sqlite": SqliteStore, "postgres": PostgresStore}


# ---------------------------------------------------------------------------------------------
# The child: one measurement, in a process of its own


class Side:
    """The child's worker: a thread of this process (memory) or a `fastjobs worker` process."""

    def __init__(self, url: str, tmp: Path, module: str, concurrency: int, remote: bool) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if remote:
            env = dict(os.environ, FASTJOBS_URL=url, PYTHONPATH=str(tmp))
            self.proc = subprocess.Popen([PY, "-m", "fastjobs", "worker", module, "--queue", "bench", "--concurrency",
                                          str(concurrency), "--log-level", "WARNING"], env=env, cwd=str(tmp),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.pid = self.proc.pid
            return
        import fastjobs

        self.worker = fastjobs.Worker(queues=["bench"], concurrency=concurrency)
        self.thread = threading.Thread(target=lambda: self.worker.run(install_signals=False), daemon=True)
        self.thread.start()
        self.pid = os.getpid()

    def alive(self) -> bool:
        return self.proc.poll() is None if self.proc else self.thread.is_alive()

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        else:
            self.worker.stop()
            self.thread.join(30)


def payloads(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"i": i, "s": "x" * 32} for i in range(start, start + n)]


def child(a: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fastjobs-bench-jobs-"))
    module = f"bench_store_jobs_{a.handler}"
    (tmp / f"{module}.py").write_text(JOBS[a.handler])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    os.environ["BENCH_UDP_PORT"] = str(udp.getsockname()[1])
    os.environ["BENCH_COUNTER"] = str(tmp / "done")
    (tmp / "done").write_bytes(bytes(8))
    sys.path.insert(0, str(tmp))
    store = STORES[a.store].__new__(STORES[a.store])  # size() needs no server state but the port
    if isinstance(store, PostgresStore):
        store.port = int(a.url.rsplit(":", 1)[1].split("/")[0])
        store.psql = a.psql
    import resource

    import fastjobs

    fastjobs.configure(a.url)  # the default prefix: PostgreSQL takes no other
    jobs = __import__(module)
    try:
        if a.workload in ("W1", "generator"):
            if a.workload == "W1":
                items = payloads(a.n)
                t0 = time.perf_counter()
                jobs.BenchNoop.dispatch_many(items)
            else:
                t0 = time.perf_counter()
                jobs.BenchNoop.dispatch_many({"i": i, "s": "x" * 32} for i in range(a.n))
            el = time.perf_counter() - t0
            return {"n": a.n, "seconds": el, "jobs_per_s": a.n / el,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if a.workload == "W4":
            items = payloads(a.n)
            jobs.BenchNoop.dispatch_many(payloads(10, start=10_000_000))  # the store's tables exist
            before = store.size(a.url)
            jobs.BenchNoop.dispatch_many(items)
            after = store.size(a.url)
            what = {"memory": "process RSS", "sqlite": "database file + WAL after a checkpoint",
                    "postgres": "pg_database_size"}[a.store]
            return {"n": a.n, "bytes_per_job": round((after - before) / a.n, 1), "measured": what}
        if a.workload == "W2":
            return drain(a, jobs, tmp, module)
        return latency(a, jobs, tmp, module, udp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def drain(a: argparse.Namespace, jobs: Any, tmp: Path, module: str) -> dict[str, Any]:
    jobs.BenchNoop.dispatch_many(payloads(a.n))
    f = open(tmp / "done", "r+b")
    done = memoryview(mmap.mmap(f.fileno(), 8)).cast("Q")
    side = Side(a.url, tmp, module, 1 if a.handler == "sync" else 64, a.remote)
    try:
        t0 = c0 = None
        deadline = time.monotonic() + a.budget
        while True:
            c = done[0]
            now = time.perf_counter()
            if t0 is None and c >= a.n // 100:
                t0, c0 = now, c
                cpu0 = (tree_cpu_s(a.server_pid) if a.server_pid else 0.0, proc_cpu_s(side.pid))
            if c >= a.n:
                cpu1 = (tree_cpu_s(a.server_pid) if a.server_pid else 0.0, proc_cpu_s(side.pid))
                break
            if time.monotonic() > deadline or not side.alive():
                raise RuntimeError(f"drain stopped at {c} of {a.n}")
            time.sleep(0.005)
        assert t0 is not None and c0 is not None
        jobs_done = a.n - c0
        out = {"n": a.n, "handler": a.handler, "seconds": now - t0, "jobs_per_s": jobs_done / (now - t0),
               ("process_us_per_job" if not a.remote else "worker_us_per_job"):
                   round((cpu1[1] - cpu0[1]) / jobs_done * 1e6, 3)}
        if a.server_pid:
            out["server_us_per_job"] = round((cpu1[0] - cpu0[0]) / jobs_done * 1e6, 3)
        return out
    finally:
        side.stop()


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


def latency(a: argparse.Namespace, jobs: Any, tmp: Path, module: str, udp: socket.socket) -> dict[str, Any]:
    side = Side(a.url, tmp, module, 4, a.remote)
    udp.settimeout(30)
    try:
        for i in range(20):  # warm: the worker is up and idle
            jobs.BenchLat.dispatch({"i": -1 - i}).send()
        for _ in range(20):
            udp.recvfrom(100)
        time.sleep(0.5)
        lats: list[float] = []
        if a.workload == "W3":
            for i in range(1000):
                send = time.time()
                jobs.BenchLat.dispatch({"i": i, "s": "x" * 32}).send()
                lats.append((float(udp.recvfrom(100)[0].split()[1]) - send) * 1000)
            return {"p50_ms": round(pct(lats, 0.5), 3), "p99_ms": round(pct(lats, 0.99), 3),
                    "mean_ms": round(sum(lats) / len(lats), 3), "count": len(lats)}
        sends = {}
        for i in range(200):
            sends[i] = time.time()
            jobs.BenchLat.dispatch({"i": i, "s": "x" * 32}).delay(2).send()
        for _ in range(200):
            i_s, t_s = udp.recvfrom(100)[0].split()
            lats.append((float(t_s) - sends[int(i_s)] - 2) * 1000)
        return {"p50_ms": round(pct(lats, 0.5), 3), "p99_ms": round(pct(lats, 0.99), 3), "max_ms": round(max(lats), 3),
                "count": len(lats)}
    finally:
        side.stop()


# ---------------------------------------------------------------------------------------------
# The run: every workload on one store


def run_child(store: Store, workload: str, n: int, handler: str = "sync", budget: float = 600) -> dict[str, Any]:
    try:
        url = store.fresh()
    except Exception as e:  # noqa: BLE001 - said in the figures, the other workloads go on
        return {"error": str(e)}
    cmd = [PY, str(Path(__file__).resolve()), "--child", workload, "--store", store.name, "--url", url, "--n", str(n),
           "--handler", handler, "--budget", str(budget)]
    if store.remote:
        cmd.append("--remote")
    if store.server_pid():
        cmd += ["--server-pid", str(store.server_pid())]
    if isinstance(store, PostgresStore):
        cmd += ["--psql", store.psql]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=budget + 120)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {budget + 120:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": ((out.stderr or "").strip().splitlines() or ["no output"])[-1][:300]}
    return dict(json.loads(lines[-1]))


def main(store_name: str, quick: bool, only: set[str]) -> int:
    scale = 10 if quick else 1
    store = STORES[store_name]()
    figures: dict[str, Any] = {"store": store_name, "store_version": store.version(), "cores": os.cpu_count()}
    print(f"store {store_name} {figures['store_version']}".rstrip(), file=sys.stderr)

    def na(key: str) -> bool:
        why = NOT_APPLICABLE.get((store_name, key))
        if why:
            figures[key] = {"n/a": why}
            print(f"{key.split('_')[0]:<4}n/a on {store_name}: {why}", file=sys.stderr)
        return why is not None

    try:
        if "W1" in only:
            figures["W1_list"] = r = run_child(store, "W1", 1_000_000 // scale)
            print(f"W1  1M from a list      {r.get('jobs_per_s', 0):>12,.0f} jobs/s {r.get('error', '')}", file=sys.stderr)
            if not na("generator_10M"):
                figures["generator_10M"] = g = run_child(store, "generator", 10_000_000 // scale)
                print(f"    10M from a generator {g.get('jobs_per_s', 0):>12,.0f} jobs/s, peak RSS {g.get('peak_rss_mb', 0):.0f} MB "
                      f"{g.get('error', '')}", file=sys.stderr)
        for handler in ("sync", "async") if "W2" in only else ():
            figures[f"W2_{handler}"] = d = run_child(store, "W2", 1_000_000 // scale, handler)
            cpu = ", ".join(f"{k.split('_')[0]} {v} µs" for k, v in d.items() if k.endswith("_us_per_job"))
            print(f"W2  drain, {handler} no-op     {d.get('jobs_per_s', 0):>12,.0f} jobs/s (CPU per job: {cpu}) {d.get('error', '')}",
                  file=sys.stderr)
        for w, key in (("W3", "p50_ms"), ("W4", "bytes_per_job"), ("W5", "p50_ms")):
            if w in only:
                figures[w] = r = run_child(store, w, 100_000 // scale if w == "W4" else 0)
                extra = f", p99 {r.get('p99_ms')}" if "p99_ms" in r else ""
                print(f"{w}  {key:<20} {r.get(key, r.get('error'))}{extra}", file=sys.stderr)
        if "W5" in only:
            na("W5_spread")
    finally:
        store.stop()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", dest="workload", required=True, choices=["W1", "generator", "W2", "W3", "W4", "W5"])
    ap.add_argument("--store", required=True, choices=sorted(STORES))
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--handler", default="sync", choices=sorted(JOBS))
    ap.add_argument("--remote", action="store_true")
    ap.add_argument("--server-pid", type=int, default=None)
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--budget", type=float, default=600)
    print(json.dumps(child(ap.parse_args())))
