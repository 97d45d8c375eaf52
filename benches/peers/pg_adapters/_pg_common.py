"""Shared harness of the PostgreSQL adapters (CONTRACT.md, "PostgreSQL peers"): W1, W2 and W3
on top of a small ``PgPeer`` object, the worker process, and the one JSON line. Standard
library only: it runs in every peer's virtualenv.

    <python> benches/peers/pg_adapters/<system>_pg.py --dsn postgresql://... --workload W1 --n N

The task bodies do no database work: a no-op that adds 1 to a counter in a shared memory file
(``bump()``, read by the adapter to time the drain without querying the queue's tables), and
the latency task that sends its start time over UDP (``started()``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
S32 = "x" * 32

# ---------------------------------------------------------------------------------------------
# What the task bodies call (in the worker process)

_counter: Any = None
_lock = threading.Lock()
_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _open_counter(path: str) -> Any:
    f = open(path, "r+b")
    return memoryview(mmap.mmap(f.fileno(), 8)).cast("Q")


def bump() -> None:
    """The no-op body: one more job done, in the counter file $BENCH_COUNTER."""
    global _counter
    with _lock:
        if _counter is None:
            _counter = _open_counter(os.environ["BENCH_COUNTER"])
        _counter[0] += 1


def started(i: int) -> None:
    """The latency body: this job's start time to the adapter, over UDP ($BENCH_UDP_PORT)."""
    _udp.sendto(f"{i} {time.time()!r}".encode(), ("127.0.0.1", int(os.environ["BENCH_UDP_PORT"])))


def die_with_parent() -> None:
    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass


# ---------------------------------------------------------------------------------------------
# The adapter side


class PgPeer:
    system = "?"
    version = "?"

    def setup(self, dsn: str) -> None:
        """Install the system's schema in the (empty) database and create its clients."""

    def enqueue_bulk(self, items: list[dict]) -> None:
        raise NotImplementedError

    def dispatch_lat(self, item: dict) -> None:
        raise NotImplementedError

    def worker_argv(self, workload: str) -> list[str]:
        """The worker process's command (run with this interpreter, cwd pg_adapters/)."""
        raise NotImplementedError

    def settings(self, workload: str) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


def payloads(n: int, start: int = 0) -> list[dict]:
    return [{"i": i, "s": S32} for i in range(start, start + n)]


def cpu_s(pid: int, children: bool = False) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu_s(root: int) -> float:
    """The PostgreSQL server's CPU: the postmaster, its ended children and its live ones."""
    total = cpu_s(root, children=True)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                if int(f[1]) == root:
                    total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError):
                pass
    return total


class Run:
    def __init__(self, peer: PgPeer, a: argparse.Namespace) -> None:
        self.peer, self.a = peer, a
        self.counter_path = tempfile.mktemp(prefix="pg-bench-counter-")
        with open(self.counter_path, "wb") as f:
            f.write(b"\0" * 8)
        self.counter = _open_counter(self.counter_path)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(30)
        self.worker: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="pg-bench-worker-", suffix=".log", delete=False)

    def start_worker(self, workload: str) -> None:
        env = dict(os.environ, BENCH_DSN=self.a.dsn, BENCH_COUNTER=self.counter_path,
                   BENCH_UDP_PORT=str(self.udp.getsockname()[1]), PYTHONPATH=HERE, PYTHONUNBUFFERED="1")
        argv = [sys.executable, *self.peer.worker_argv(workload)]
        print(f"starting worker: {' '.join(argv)}", file=sys.stderr)
        self.worker = subprocess.Popen(argv, env=env, cwd=HERE, stdin=subprocess.DEVNULL, stdout=self.log,
                                       stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)

    def check(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            self.log.flush()
            tail = open(self.log.name, errors="replace").read()[-800:]
            raise RuntimeError(f"worker exited with {self.worker.returncode}: {tail}")

    def stop(self) -> None:
        if self.worker is not None:
            try:
                os.killpg(self.worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.worker.wait(10)
        for p in (self.counter_path, self.log.name):
            try:
                os.unlink(p)
            except OSError:
                pass


def w1(run: Run) -> dict[str, Any]:
    run.peer.enqueue_bulk(payloads(1000, start=20_000_000))
    items = payloads(run.a.n)
    t0 = time.perf_counter()
    run.peer.enqueue_bulk(items)
    dt = time.perf_counter() - t0
    return {"seconds": round(dt, 6), "jobs_per_s": round(run.a.n / dt, 1)}


def w2(run: Run) -> dict[str, Any]:
    n = run.a.n
    run.peer.enqueue_bulk(payloads(n))
    first = max(1, math.ceil(n * 0.01))
    run.start_worker("W2")
    deadline = time.monotonic() + run.a.budget
    t0 = c0 = None
    pid = run.a.server_pid
    while True:
        c = run.counter[0]
        now = time.perf_counter()
        if t0 is None and c >= first:
            t0, c0 = now, c
            cpu0 = (server_cpu_s(pid) if pid else 0.0, cpu_s(run.worker.pid))
        if c >= n:
            cpu1 = (server_cpu_s(pid) if pid else 0.0, cpu_s(run.worker.pid))
            break
        if time.monotonic() > deadline:
            rate = (c - c0) / (now - t0) if t0 is not None and now > t0 else 0
            raise RuntimeError(f"timed out draining: {c} of {n} done ({rate:,.0f}/s from 1%)")
        run.check()
        time.sleep(0.005)
    done = n - c0
    out = {"seconds": round(now - t0, 6), "jobs_per_s": round(done / (now - t0), 1),
           "worker_us_per_job": round((cpu1[1] - cpu0[1]) / done * 1e6, 2)}
    if pid:
        out["server_us_per_job"] = round((cpu1[0] - cpu0[0]) / done * 1e6, 2)
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


def w3(run: Run, count: int = 1000) -> dict[str, Any]:
    run.start_worker("W3")
    for i in range(20):
        run.peer.dispatch_lat({"i": -1 - i, "s": S32})
    for _ in range(20):
        run.udp.recvfrom(100)
    time.sleep(0.5)
    lats = []
    for i in range(count):
        send = time.time()
        run.peer.dispatch_lat({"i": i, "s": S32})
        try:
            lats.append((float(run.udp.recvfrom(100)[0].split()[1]) - send) * 1000)
        except TimeoutError:
            run.check()
            raise
    return {"p50_ms": round(pct(lats, 0.5), 3), "p99_ms": round(pct(lats, 0.99), 3),
            "mean_ms": round(sum(lats) / len(lats), 3), "count": count}


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3}


def main(peer: PgPeer) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--server-pid", type=int, default=None, help="the postmaster, for the server's CPU per job")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("PEER_BUDGET_S", 300)))
    a = ap.parse_args()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # one JSON line on the real stdout, anything else to stderr
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict[str, Any] = {"system": peer.system, "workload": a.workload, "n": a.n}
    run = None
    try:
        peer.setup(a.dsn)
        result["version"] = peer.version
        run = Run(peer, a)
        result.update(WORKLOADS[a.workload](run))
        result["settings"] = peer.settings(a.workload)
    except BaseException as e:  # noqa: BLE001 - reported in the JSON line
        traceback.print_exc(file=sys.stderr)
        result["error"] = f"{type(e).__name__}: {e}"[:400]
    finally:
        if run is not None:
            run.stop()
        try:
            peer.close()
        except Exception:
            traceback.print_exc(file=sys.stderr)
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0
