"""Shared harness for the synchronous peer adapters (RQ, Celery, Dramatiq, Huey).

Each adapter module defines a small ``Peer`` object (see ``PeerBase``) and calls
``main(peer)``. This module implements the workloads W1..W5 and W2P of CONTRACT.md on top of it,
starts/kills the worker process, and prints the single JSON line on the real stdout.

Worker processes are always killed:
  * normally, in a ``finally`` (SIGKILL to the worker's own process group);
  * on SIGTERM/SIGINT/SIGHUP to the adapter (handler raises SystemExit -> finally);
  * at interpreter exit (atexit), as a second net;
  * if the adapter itself is SIGKILLed (e.g. by the runner's time limit), through
    ``PR_SET_PDEATHSIG`` set in the worker before exec (and, for the worker's own
    children, by ``die_with_parent()`` called from the task modules).
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
from typing import ClassVar

import _w2p
import _w6

ADAPTERS_DIR = os.path.dirname(os.path.abspath(__file__))
S32 = "x" * 32
DONE = "bench:done"
LAT = "bench:lat"
LATE = "bench:late"

# Default wall-clock budget of one adapter run: the runner's limit is 120 s per workload.
DEFAULT_BUDGET_S = 110.0

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:  # pragma: no cover - not Linux
        pass


class BenchError(Exception):
    def __init__(self, msg: str, **extra):
        super().__init__(msg)
        self.extra = extra


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
        # The task modules live in ADAPTERS_DIR; run from a neutral cwd so nothing else there
        # shadows a package.
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
            start_new_session=True,  # own process group: killpg gets its children too
            preexec_fn=die_with_parent,
        )
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise BenchError(
                f"worker exited early with code {self.proc.returncode}: {self.tail()!r}"
            )

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


class PeerBase:
    """What an adapter provides. `r` is a redis-py client (bytes responses) on the bench db."""

    system = "?"
    version = "?"
    settings: ClassVar[dict] = {}
    # W2P: set by main() before setup(). An adapter whose system has a multi-process mode
    # started by one command defines `pool_argv()` (same shape as worker_argv) and enqueues
    # the `cpu` task instead of `noop` when body == "cpu".
    processes = 1
    body = "incr"

    def setup(self, url: str, workload: str) -> None:
        """Create the system's client objects (producer side)."""

    def enqueue_bulk(self, items: list[dict]) -> None:
        """Enqueue the `noop` task once per payload with the system's fastest bulk API."""
        raise NotImplementedError

    def dispatch_lat(self, item: dict) -> None:
        """Enqueue one `lat` task (W3)."""
        raise NotImplementedError

    def dispatch_warm(self, items: list[dict]) -> None:
        """Enqueue warm-up `noop` jobs (W3/W5)."""
        self.enqueue_bulk(items)

    def dispatch_late(self, item: dict, delay_s: float) -> None:
        """Enqueue one `late` task delayed by `delay_s` seconds (W5)."""
        raise NotImplementedError

    def worker_argv(self, workload: str) -> tuple[list[str], dict]:
        """`python -m` module plus arguments, and extra environment, of one worker process:
        (["celery", "-A", ...], {"VAR": "value"})."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Workloads


class Ctx:
    def __init__(self, peer: PeerBase, r, url: str, n: int, budget_s: float):
        self.peer = peer
        self.r = r
        self.url = url
        self.n = n
        self.deadline = time.monotonic() + budget_s
        self.worker: WorkerProcess | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def start_worker(self, workload: str) -> WorkerProcess:
        margv, env = self.peer.pool_argv() if workload == "W2P" else self.peer.worker_argv(workload)
        argv = [sys.executable, os.path.join(ADAPTERS_DIR, "_launch.py"), *margv]
        env = dict(env)
        env["BENCH_REDIS_URL"] = self.url
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
    # Every system first enqueues 1,000 jobs untimed: connections, script loading and lazy
    # imports are then warm, as in a service that dispatches more than once.
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
            extra = {}
            if t0 is not None and now > t0:
                extra = {"partial_count": c, "partial_seconds": round(now - t0, 6),
                         "partial_jobs_per_s": round((c - c0) / (now - t0), 1)}
            raise BenchError(f"timed out draining: bench:done={c} < {n}", **extra)
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
    before = int(ctx.r.info("memory")["used_memory"])
    ctx.peer.enqueue_bulk(items)
    after = int(ctx.r.info("memory")["used_memory"])
    return {"bytes_per_job": round((after - before) / ctx.n, 1)}


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
    if os.environ.get("PEER_DEBUG"):
        print("lateness ms by i:", [round(x) for x in late], file=sys.stderr)
    return {
        "p50_ms": round(pct(late, 0.50), 3),
        "p99_ms": round(pct(late, 0.99), 3),
        "max_ms": round(max(late), 3),
        "min_ms": round(min(late), 3),
        "count": count,
    }



def w6(ctx: Ctx) -> dict:
    # Single dispatches, as from a web app (see _w6.py): the sync single enqueue from threads,
    # and, where the peer has one (fastjobs, bare_list), its async one from asyncio tasks.
    peer = ctx.peer
    if hasattr(peer, "dispatch_one_async"):
        loop = asyncio.new_event_loop()  # one loop for the face: async clients bind to it
        try:
            face_async = loop.run_until_complete(_w6.async_face(peer.dispatch_one_async, peer.w6_seconds))
        finally:
            loop.close()
    else:
        face_async = _w6.unsupported(f"{peer.system} has no async single enqueue")
    return {"async": face_async, "threads": _w6.threads_face(peer.dispatch_one, peer.w6_seconds)}


WORKLOADS = {"W1": w1, "W2": w2, "W2P": w2p, "W3": w3, "W4": w4, "W5": w5, "W6": w6}


def main(peer: PeerBase, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--processes", default="1", help="W2P: worker processes, a number or auto (usable cores)")
    ap.add_argument("--body", default="incr", choices=sorted(_w2p.DEFAULT_N), help="W2P: the task body")
    ap.add_argument("--w6-seconds", type=float, default=_w6.DEFAULT_SECONDS, help="W6: seconds of calls per point")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("PEER_BUDGET_S", DEFAULT_BUDGET_S)),
                    help="seconds before the adapter gives up and reports an error")
    args = ap.parse_args(argv)
    peer.w6_seconds = args.w6_seconds
    defaults = {"W1": 100_000, "W2": 20_000, "W4": 100_000, "W2P": _w2p.DEFAULT_N[args.body]}
    n = args.n if args.n is not None else defaults.get(args.workload, 0)
    if args.workload == "W3":
        n = 1000
    elif args.workload == "W5":
        n = 200

    # Exactly one JSON line on the real stdout; anything else (library prints) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(_kill_all)

    pool = {}  # W2P's parameters, in every line it prints
    if args.workload == "W2P":
        peer.processes, peer.body = _w2p.processes(args.processes), args.body
        pool = {"processes": peer.processes, "body": peer.body}
    result = {"system": peer.system, "workload": args.workload, **pool}
    if args.workload == "W2P" and not hasattr(peer, "pool_argv"):
        out.write(json.dumps({**result, "error": "no multi-process mode from one command"}) + "\n")
        out.flush()
        return 0
    ctx = None
    try:
        import redis

        r = redis.Redis.from_url(args.redis_url)
        r.ping()
        peer.setup(args.redis_url, args.workload)
        result = {
            "system": peer.system,
            "version": peer.version,
            "workload": args.workload,
            "n": n,
            **pool,
        }
        ctx = Ctx(peer, r, args.redis_url, n, args.budget)
        figures = WORKLOADS[args.workload](ctx)
        result.update(figures)
        result["settings"] = peer.settings_for(args.workload) if hasattr(peer, "settings_for") else peer.settings
    except BaseException as e:  # noqa: BLE001 - report whatever happened, then clean up
        traceback.print_exc(file=sys.stderr)
        if ctx is not None and ctx.worker is not None:
            print(f"worker log tail:\n{ctx.worker.tail()}", file=sys.stderr)
        result = {
            "system": peer.system,
            "version": getattr(peer, "version", "?"),
            "workload": args.workload,
            "n": n,
            **pool,
            "error": f"{type(e).__name__}: {e}",
        }
        result.update(getattr(e, "extra", None) or {})
    finally:
        _kill_all()
        try:
            peer.close()
        except Exception:
            traceback.print_exc(file=sys.stderr)
    out.write(json.dumps(result) + "\n")
    out.flush()
    # The JSON line (figures or "error") is the outcome; exit 0 whenever it was printed.
    return 0
