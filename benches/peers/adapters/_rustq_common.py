"""Shared harness for the "Python queue with a native core" peer adapters
(taskito, ardiq, mayu, fastq-redis, rrq). See ../CONTRACT.md.

It follows the same rules and figure names as _common_sync.py (written for the classic
peers) but is kept apart so that these adapters, which run in their own venvs and on
other Python versions, do not depend on a file that is tuned for other systems.

Each adapter defines a `Peer` subclass and calls `main(peer)`. This module implements
W1..W5 and W2P, starts the worker process, and prints the single JSON line on the real stdout.

Worker processes are always killed:
  * normally, in a `finally` (SIGKILL to the worker's own process group);
  * on SIGTERM/SIGINT/SIGHUP to the adapter (the handler raises SystemExit -> finally);
  * at interpreter exit (atexit), as a second net;
  * if the adapter itself is SIGKILLed (the runner's time limit), through PR_SET_PDEATHSIG
    set in the worker before exec; the task modules call `die_with_parent()` too, for
    workers that start processes of their own (rrq's runner).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import _w2p
import _w6

ADAPTERS_DIR = os.path.dirname(os.path.abspath(__file__))
S32 = "x" * 32
DONE = "bench:done"
LAT = "bench:lat"
LATE = "bench:late"

# Wall-clock budget of one adapter run: the runner's limit is 120 s per workload.
DEFAULT_BUDGET_S = 110.0
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:  # pragma: no cover - not Linux
        pass


def worker_guard() -> None:
    """Called at import by the task modules: in a process the adapter started (directly or
    through the system's own launcher), die with the parent. A no-op in the adapter itself,
    whose parent is the runner."""
    if os.environ.get("BENCH_WORKER") == "1":
        die_with_parent()


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


class BenchError(Exception):
    pass


class Unsupported(Exception):
    """The workload cannot run on this system (reported as {"error": ...})."""


def payloads(n: int, start: int = 0) -> list[dict]:
    return [{"i": i, "s": S32} for i in range(start, start + n)]


pct = _w6.pct  # one percentile for every figure of the harness


# --------------------------------------------------------------------------------------------
# Worker processes

_LIVE: list[WorkerProcess] = []


class WorkerProcess:
    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None):
        self.argv = argv
        self.log = tempfile.NamedTemporaryFile(prefix="peer-worker-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["PYTHONPATH"] = ADAPTERS_DIR + (
            os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else ""
        )
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            argv,
            env=full_env,
            cwd=cwd or tempfile.gettempdir(),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: killpg reaches its children too
            preexec_fn=die_with_parent,
        )
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise BenchError(f"worker exited early with code {self.proc.returncode}: {self.tail()!r}")

    def tail(self, nbytes: int = 1500) -> str:
        try:
            with open(self.log.name, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - nbytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        if self in _LIVE:
            _LIVE.remove(self)
        if os.environ.get("PEER_KEEP_WORKER_LOG"):
            print(f"worker log kept: {self.log.name}", file=sys.stderr)
        else:
            try:
                self.log.close()
                os.unlink(self.log.name)
            except OSError:
                pass


def _kill_all() -> None:
    for w in list(_LIVE):
        w.kill()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------
# The per-system interface


class Peer:
    """What an adapter provides. Methods are synchronous; an async system runs its coroutines
    on `self.run(...)` (one event loop kept for the whole run)."""

    system = "?"
    version = "?"
    store = "redis"
    # W2P: set by main() before setup(). An adapter whose system has a multi-process mode
    # started by one command defines `pool_argv()` (same shape as worker_argv) and enqueues
    # the `cpu` task instead of `noop` when body == "cpu".
    processes = 1
    body = "incr"

    _loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def setup(self, url: str, workload: str) -> None:
        """Create the system's client objects (producer side)."""

    def check_workload(self, workload: str) -> None:
        """Raise Unsupported before anything starts if `workload` cannot run here."""

    def enqueue_bulk(self, items: list[dict]) -> None:
        """Enqueue the `noop` task once per payload with the system's fastest bulk API."""
        raise NotImplementedError

    def dispatch_warm(self, items: list[dict]) -> None:
        """Enqueue warm-up `noop` jobs (W3/W5)."""
        self.enqueue_bulk(items)

    def dispatch_lat(self, item: dict) -> None:
        """Enqueue one `lat` task (W3)."""
        raise NotImplementedError

    def dispatch_late(self, item: dict, delay_s: float) -> None:
        """Enqueue one `late` task delayed by `delay_s` seconds (W5)."""
        raise Unsupported(f"{self.system} has no delayed-job API")

    def worker_argv(self, workload: str) -> tuple[list[str], dict]:
        """Full argv and extra environment of one worker process."""
        raise NotImplementedError

    def settings(self, workload: str) -> dict:
        return {}

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Workloads


class Ctx:
    def __init__(self, peer: Peer, r, url: str, n: int, budget_s: float):
        self.peer = peer
        self.r = r
        self.url = url
        self.n = n
        self.deadline = time.monotonic() + budget_s
        self.worker: WorkerProcess | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def start_worker(self, workload: str) -> WorkerProcess:
        argv, env = self.peer.pool_argv() if workload == "W2P" else self.peer.worker_argv(workload)
        env = dict(env)
        env["BENCH_REDIS_URL"] = self.url
        env["BENCH_WORKER"] = "1"
        print(f"starting worker: {' '.join(argv)}", file=sys.stderr)
        self.worker = WorkerProcess(argv, env)
        return self.worker

    def wait_done(self, target: int, what: str, poll_s: float = 0.002) -> None:
        r = self.r
        while True:
            c = int(r.get(DONE) or 0)
            if c >= target:
                return
            if self.remaining() <= 0:
                raise BenchError(f"timed out waiting for {what}: bench:done={c} < {target}")
            if self.worker is not None:
                self.worker.check()
            time.sleep(poll_s)


def w1(ctx: Ctx) -> dict:
    # Warm-up as in _common_sync.w1: 1,000 jobs, untimed.
    ctx.peer.enqueue_bulk(payloads(1000, start=20_000_000))
    items = payloads(ctx.n)
    t0 = time.perf_counter()
    ctx.peer.enqueue_bulk(items)
    dt = time.perf_counter() - t0
    return {"seconds": round(dt, 6), "jobs_per_s": round(ctx.n / dt, 1)}


def w2(ctx: Ctx, workload: str = "W2") -> dict:
    n = ctx.n
    ctx.peer.enqueue_bulk(payloads(n))
    r = ctx.r
    first = max(1, math.ceil(n * 0.01))
    t_spawn = time.perf_counter()
    ctx.start_worker(workload)
    t0 = c0 = None
    while True:
        c = int(r.get(DONE) or 0)
        now = time.perf_counter()
        if t0 is None and c >= first:
            t0, c0 = now, c
        if c >= n:
            t1 = now
            break
        if ctx.remaining() <= 0:
            raise BenchError(f"timed out draining: bench:done={c} < {n}")
        ctx.worker.check()
        time.sleep(0.002)
    if t1 <= t0:  # everything finished between two polls
        raise BenchError("drain too short to measure; use a larger n")
    dt = t1 - t0
    return {
        "seconds": round(dt, 6),
        "jobs_per_s": round((n - c0) / dt, 1),
        "start_count": c0,
        "total_seconds": round(t1 - t_spawn, 6),
    }


def w2p(ctx: Ctx) -> dict:
    # W2 with the system's multi-process mode; peer.processes and peer.body say which.
    figures = w2(ctx, "W2P")
    if ctx.peer.body == "cpu":
        figures["cpu_body_ms"] = _w2p.body_ms()
    return figures


def _warm(ctx: Ctx, k: int = 20) -> None:
    ctx.peer.dispatch_warm(payloads(k, start=10_000_000))
    ctx.wait_done(k, "warm-up jobs")
    ctx.r.delete(LAT, LATE)


def w3(ctx: Ctx, count: int = 1000) -> dict:
    ctx.start_worker("W3")
    _warm(ctx)
    r = ctx.r
    lats = []
    for i in range(count):
        item = {"i": i, "s": S32}
        send = time.time()
        ctx.peer.dispatch_lat(item)
        left = ctx.remaining()
        if left <= 0:
            raise BenchError(f"timed out after {i} of {count} latency jobs")
        got = r.blpop([LAT], timeout=max(1, min(int(left), 30)))
        if got is None:
            ctx.worker.check()
            raise BenchError(f"latency job {i} did not start in time")
        lats.append((float(got[1]) - send) * 1000.0)
    return {
        "p50_ms": round(pct(lats, 0.50), 3),
        "p99_ms": round(pct(lats, 0.99), 3),
        "mean_ms": round(sum(lats) / len(lats), 3),
        "count": count,
    }


def w4(ctx: Ctx) -> dict:
    items = payloads(ctx.n)
    before = ctx.r.info("memory")
    ctx.peer.enqueue_bulk(items)
    after = ctx.r.info("memory")
    used = int(after["used_memory"]) - int(before["used_memory"])
    # used_memory also counts client buffers: right after one huge pipelined call the
    # producer connection's query buffer may not be shrunk yet. Say how much of the delta
    # that is, so a reading inflated by it can be told apart.
    clients = int(after.get("mem_clients_normal", 0)) - int(before.get("mem_clients_normal", 0))
    return {
        "bytes_per_job": round(used / ctx.n, 1),
        "client_buffers_per_job": round(clients / ctx.n, 1),
    }


def w5(ctx: Ctx, count: int = 200, delay_s: float = 2.0) -> dict:
    ctx.start_worker("W5")
    _warm(ctx)
    r = ctx.r
    sends = {}
    for i in range(count):
        item = {"i": i, "s": S32}
        sends[i] = time.time()
        ctx.peer.dispatch_late(item, delay_s)
    while r.llen(LATE) < count:
        if ctx.remaining() <= 0:
            raise BenchError(f"timed out: {r.llen(LATE)} of {count} delayed jobs started")
        ctx.worker.check()
        time.sleep(0.01)
    late = []
    seen = set()
    for raw in r.lrange(LATE, 0, -1):
        i_s, t_s = raw.decode().split(" ", 1)
        i = int(i_s)
        if i in seen:
            continue
        seen.add(i)
        late.append((float(t_s) - (sends[i] + delay_s)) * 1000.0)
    if len(late) != count:
        raise BenchError(f"{len(late)} distinct delayed jobs ran, expected {count}")
    return {
        "p50_ms": round(pct(late, 0.50), 3),
        "p99_ms": round(pct(late, 0.99), 3),
        "max_ms": round(max(late), 3),
        "min_ms": round(min(late), 3),
        "count": count,
    }



def w6(ctx: Ctx) -> dict:
    # Single dispatches, as from a web app (see _w6.py): the peer's sync single enqueue from
    # threads, its async one from asyncio tasks on the peer's own loop; a face it lacks is an error.
    peer = ctx.peer
    if hasattr(peer, "dispatch_one_async"):
        face_async = peer.run(_w6.async_face(peer.dispatch_one_async, peer.w6_seconds))
    else:
        face_async = _w6.unsupported(f"{peer.system} has no async single enqueue")
    if hasattr(peer, "dispatch_one"):
        face_threads = _w6.threads_face(peer.dispatch_one, peer.w6_seconds)
    else:
        face_threads = _w6.unsupported(f"{peer.system} has no sync single enqueue")
    return {"async": face_async, "threads": face_threads}


WORKLOADS = {"W1": w1, "W2": w2, "W2P": w2p, "W3": w3, "W4": w4, "W5": w5, "W6": w6}


def main(peer: Peer, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--processes", default="1", help="W2P: worker processes, a number or auto (usable cores)")
    ap.add_argument("--body", default="incr", choices=sorted(_w2p.DEFAULT_N), help="W2P: the task body")
    ap.add_argument("--w6-seconds", type=float, default=_w6.DEFAULT_SECONDS, help="W6: seconds of calls per point")
    ap.add_argument("--budget", type=float, default=env_float("PEER_BUDGET_S", DEFAULT_BUDGET_S),
                    help="seconds before the adapter gives up and reports an error")
    args = ap.parse_args(argv)
    peer.w6_seconds = args.w6_seconds
    defaults = {"W1": 100_000, "W2": 20_000, "W4": 100_000, "W2P": _w2p.DEFAULT_N[args.body]}
    n = args.n if args.n is not None else defaults.get(args.workload, 0)
    if args.workload == "W3":
        n = 1000
    elif args.workload == "W5":
        n = 200

    # Exactly one JSON line on the real stdout; anything else (library prints, native
    # libraries writing to fd 1) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(_kill_all)

    head = {"system": peer.system, "version": getattr(peer, "version", "?"), "workload": args.workload}
    if args.workload == "W2P":
        peer.processes, peer.body = _w2p.processes(args.processes), args.body
        head.update(processes=peer.processes, body=peer.body)
    if getattr(peer, "store", "redis") != "redis":
        head["store"] = peer.store
    result = dict(head)
    ctx = None
    try:
        if args.workload == "W2P" and not hasattr(peer, "pool_argv"):
            raise Unsupported("no multi-process mode from one command")
        peer.check_workload(args.workload)
        import redis

        r = redis.Redis.from_url(args.redis_url)
        r.ping()
        peer.setup(args.redis_url, args.workload)
        head["version"] = peer.version
        result = dict(head, n=n)
        ctx = Ctx(peer, r, args.redis_url, n, args.budget)
        figures = WORKLOADS[args.workload](ctx)
        result.update(figures)
        result["settings"] = peer.settings(args.workload)
    except Unsupported as e:
        result = dict(head, error=str(e))
    except BaseException as e:  # noqa: BLE001 - report whatever happened, then clean up
        traceback.print_exc(file=sys.stderr)
        if ctx is not None and ctx.worker is not None:
            print(f"worker log tail:\n{ctx.worker.tail()}", file=sys.stderr)
        result = dict(head, n=n, error=f"{type(e).__name__}: {e}")
    finally:
        _kill_all()
        try:
            peer.close()
        except Exception:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
    out.write(json.dumps(result) + "\n")
    out.flush()
    # Some native cores keep non-daemon threads alive; the line is out, leave now.
    os._exit(0)
