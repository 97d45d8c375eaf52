"""Shared harness for the asyncio peer adapters (arq, SAQ, Taskiq, streaq, BullMQ for Python).

Each adapter module defines a ``Peer`` (subclass of ``AsyncPeerBase``) and calls
``main(peer)``. This module implements the workloads W1..W5 and W2P of CONTRACT.md on top of it (the
producer side runs in one asyncio event loop, with a ``redis.asyncio`` client for the
measurements), starts/kills the worker process(es), and prints the single JSON line on the real
stdout.

Only the standard library and redis-py are used here, so the module works in every peer venv
(arq and SAQ pin their own redis-py versions).

Worker processes are always killed:
  * normally, in a ``finally`` (SIGKILL to the worker's own process group);
  * on SIGTERM/SIGINT/SIGHUP to the adapter (handler raises SystemExit -> finally);
  * at interpreter exit (atexit), as a second net;
  * if the adapter itself is SIGKILLed (e.g. by the runner's time limit), through
    ``PR_SET_PDEATHSIG`` set in the worker before exec (task modules call
    ``die_with_parent()`` too, for any process a library forks).
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

# Default wall-clock budget of one adapter run: the runner's limit is 120 s per workload.
DEFAULT_BUDGET_S = 110.0
DEFAULT_N = {"W1": 100_000, "W2": 20_000, "W4": 100_000}
W3_COUNT = 1000
W5_COUNT = 200
W5_DELAY_S = 2.0
WARM_JOBS = 20

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:  # pragma: no cover - not Linux
        pass


class BenchError(Exception):
    pass


def payloads(n: int, start: int = 0) -> list[dict]:
    return [{"i": i, "s": S32} for i in range(start, start + n)]


pct = _w6.pct  # one percentile for every figure of the harness


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


# --------------------------------------------------------------------------------------------
# Worker processes


_LIVE: list[ChildProcess] = []


class ChildProcess:
    """A worker (or helper, e.g. a scheduler) process in its own process group."""

    def __init__(self, argv: list[str], env: dict | None = None, label: str = "worker"):
        self.argv = argv
        self.label = label
        self.log = tempfile.NamedTemporaryFile(prefix=f"peer-{label}-", suffix=".log", delete=False)
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
            cwd=tempfile.gettempdir(),
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
                f"{self.label} exited early with code {self.proc.returncode}: {self.tail()!r}"
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
            print(f"{self.label} log kept: {self.log.name}", file=sys.stderr)
        else:
            try:
                self.log.close()
                os.unlink(self.log.name)
            except OSError:
                pass


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one live process (Linux /proc), or NaN."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _kill_all() -> None:
    for w in list(_LIVE):
        w.kill()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------
# The per-system interface


class AsyncPeerBase:
    """What an adapter provides. All producer-side methods run in the harness's event loop."""

    system = "?"
    version = "?"
    # W2P: set by main() before setup(). An adapter whose system has a multi-process mode
    # started by one command defines `pool_argv()` (same shape as worker_argv) and enqueues
    # the `cpu` task instead of `noop` when body == "cpu".
    processes = 1
    body = "incr"

    def settings(self, workload: str) -> dict:
        """The settings reported in the JSON line."""
        return {}

    async def setup(self, url: str, workload: str) -> None:
        """Create the system's client objects (producer side)."""

    async def enqueue_bulk(self, items: list[dict]) -> None:
        """Enqueue the `noop` task once per payload with the system's fastest bulk API."""
        raise NotImplementedError

    async def dispatch_warm(self, items: list[dict]) -> None:
        """Enqueue warm-up `noop` jobs (W3/W5)."""
        await self.enqueue_bulk(items)

    async def dispatch_lat(self, item: dict) -> None:
        """Enqueue one `lat` task (W3)."""
        raise NotImplementedError

    async def dispatch_late(self, item: dict, delay_s: float) -> None:
        """Enqueue one `late` task delayed by `delay_s` seconds (W5)."""
        raise NotImplementedError

    def worker_argv(self, workload: str) -> tuple[list[str], dict]:
        """Command line and extra environment of the one worker process."""
        raise NotImplementedError

    def helper_argvs(self, workload: str) -> list[tuple[str, list[str], dict]]:
        """Extra non-worker processes the system needs for this workload (label, argv, env)."""
        return []

    async def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Workloads


class Ctx:
    def __init__(self, peer: AsyncPeerBase, r, url: str, n: int, budget_s: float):
        self.peer = peer
        self.r = r  # redis.asyncio client, bytes responses
        self.url = url
        self.n = n
        self.deadline = time.monotonic() + budget_s
        self.children: list[ChildProcess] = []

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def start_worker(self, workload: str) -> None:
        for label, argv, env in self.peer.helper_argvs(workload):
            env = dict(env)
            env["BENCH_REDIS_URL"] = self.url
            print(f"starting {label}: {' '.join(argv)}", file=sys.stderr)
            self.children.append(ChildProcess(argv, env, label=label))
        argv, env = self.peer.pool_argv() if workload == "W2P" else self.peer.worker_argv(workload)
        env = dict(env)
        env["BENCH_REDIS_URL"] = self.url
        print(f"starting worker: {' '.join(argv)}", file=sys.stderr)
        self.children.append(ChildProcess(argv, env, label="worker"))

    def check_children(self) -> None:
        for c in self.children:
            c.check()

    async def wait_done(self, target: int, what: str, poll_s: float = 0.002) -> None:
        while True:
            c = int(await self.r.get(DONE) or 0)
            if c >= target:
                return
            if self.remaining() <= 0:
                raise BenchError(f"timed out waiting for {what}: bench:done={c} < {target}")
            self.check_children()
            await asyncio.sleep(poll_s)


async def w1(ctx: Ctx) -> dict:
    # Warm-up as in _common_sync.w1: 1,000 jobs, untimed.
    await ctx.peer.enqueue_bulk(payloads(1000, start=20_000_000))
    items = payloads(ctx.n)
    t0 = time.perf_counter()
    await ctx.peer.enqueue_bulk(items)
    dt = time.perf_counter() - t0
    return {"seconds": round(dt, 6), "jobs_per_s": round(ctx.n / dt, 1)}


async def w2(ctx: Ctx, workload: str = "W2") -> dict:
    n = ctx.n
    await ctx.peer.enqueue_bulk(payloads(n))
    r = ctx.r
    first = max(1, math.ceil(n * 0.01))
    t_spawn = time.perf_counter()
    ctx.start_worker(workload)
    t0 = c0 = None
    cpu0 = cpu1 = float("nan")
    while True:
        c = int(await r.get(DONE) or 0)
        now = time.perf_counter()
        if t0 is None and c >= first:
            t0, c0 = now, c
            cpu0 = proc_cpu_seconds(ctx.children[-1].proc.pid)
        if c >= n:
            t1 = now
            cpu1 = proc_cpu_seconds(ctx.children[-1].proc.pid)
            break
        if ctx.remaining() <= 0:
            raise BenchError(f"timed out draining: bench:done={c} < {n}")
        ctx.check_children()
        await asyncio.sleep(0.002)
    if t1 <= t0:  # everything finished between two polls
        raise BenchError("drain too short to measure; use a larger n")
    dt = t1 - t0
    # Diagnostic only (stderr): the worker's CPU time per job over the measured window, a
    # figure that holds up better than the rate on a busy machine (W2 only: in W2P this
    # process is the pool's parent, not the one that runs the jobs).
    if workload == "W2":
        print(f"W2 worker CPU over the window: {cpu1 - cpu0:.3f} s, "
              f"{(cpu1 - cpu0) / max(1, n - c0) * 1e6:.1f} us/job", file=sys.stderr)
    return {
        "seconds": round(dt, 6),
        "jobs_per_s": round((n - c0) / dt, 1),
        "start_count": c0,
        "total_seconds": round(t1 - t_spawn, 6),
    }


async def w2p(ctx: Ctx) -> dict:
    # W2 with the system's multi-process mode; peer.processes and peer.body say which.
    figures = await w2(ctx, "W2P")
    if ctx.peer.body == "cpu":
        figures["cpu_body_ms"] = _w2p.body_ms()
    return figures


async def _warm(ctx: Ctx, k: int = WARM_JOBS) -> None:
    await ctx.peer.dispatch_warm(payloads(k, start=10_000_000))
    await ctx.wait_done(k, "warm-up jobs")
    await ctx.r.delete(LAT, LATE)


async def w3(ctx: Ctx, count: int = W3_COUNT) -> dict:
    ctx.start_worker("W3")
    await _warm(ctx)
    r = ctx.r
    lats = []
    for i in range(count):
        item = {"i": i, "s": S32}
        send = time.time()
        await ctx.peer.dispatch_lat(item)
        left = ctx.remaining()
        if left <= 0:
            raise BenchError(f"timed out after {i} of {count} latency jobs")
        got = await r.blpop([LAT], timeout=max(1, min(int(left), 30)))
        if got is None:
            ctx.check_children()
            raise BenchError(f"latency job {i} did not start in time")
        lats.append((float(got[1]) - send) * 1000.0)
    return {
        "p50_ms": round(pct(lats, 0.50), 3),
        "p99_ms": round(pct(lats, 0.99), 3),
        "mean_ms": round(sum(lats) / len(lats), 3),
        "count": count,
    }


async def w4(ctx: Ctx) -> dict:
    items = payloads(ctx.n)
    before = int((await ctx.r.info("memory"))["used_memory"])
    await ctx.peer.enqueue_bulk(items)
    after = int((await ctx.r.info("memory"))["used_memory"])
    return {"bytes_per_job": round((after - before) / ctx.n, 1)}


async def w5(ctx: Ctx, count: int = W5_COUNT, delay_s: float = W5_DELAY_S) -> dict:
    ctx.start_worker("W5")
    await _warm(ctx)
    r = ctx.r
    sends = {}
    for i in range(count):
        item = {"i": i, "s": S32}
        sends[i] = time.time()
        await ctx.peer.dispatch_late(item, delay_s)
    while await r.llen(LATE) < count:
        if ctx.remaining() <= 0:
            raise BenchError(f"timed out: {await r.llen(LATE)} of {count} delayed jobs started")
        ctx.check_children()
        await asyncio.sleep(0.01)
    late = []
    seen = set()
    for raw in await r.lrange(LATE, 0, -1):
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



async def w6(ctx: Ctx) -> dict:
    # Single dispatches, as from a web app (see _w6.py): these systems are async-only, so the
    # async face alone.
    peer = ctx.peer
    return {"async": await _w6.async_face(peer.dispatch_one_async, peer.w6_seconds),
            "threads": _w6.unsupported(f"{peer.system} is async-only: no sync single enqueue")}


WORKLOADS = {"W1": w1, "W2": w2, "W2P": w2p, "W3": w3, "W4": w4, "W5": w5, "W6": w6}


async def _run(peer: AsyncPeerBase, url: str, workload: str, n: int, budget: float,
               holder: dict) -> dict:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        await r.ping()
        # The runner hands us an empty database; make sure of it (leftovers of an earlier
        # workload would be drained by W2's worker and skew W4's memory figure).
        if await r.dbsize():
            print("warning: database not empty at start; FLUSHDB", file=sys.stderr)
            await r.flushdb()
        await peer.setup(url, workload)
        ctx = Ctx(peer, r, url, n, budget)
        holder["ctx"] = ctx
        figures = await WORKLOADS[workload](ctx)
        return figures
    finally:
        try:
            await peer.close()
        except Exception:
            traceback.print_exc(file=sys.stderr)
        try:
            await r.aclose() if hasattr(r, "aclose") else await r.close()
        except Exception:
            pass


def main(peer: AsyncPeerBase, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--processes", default="1", help="W2P: worker processes, a number or auto (usable cores)")
    ap.add_argument("--body", default="incr", choices=sorted(_w2p.DEFAULT_N), help="W2P: the task body")
    ap.add_argument("--w6-seconds", type=float, default=_w6.DEFAULT_SECONDS, help="W6: seconds of calls per point")
    ap.add_argument("--budget", type=float,
                    default=float(os.environ.get("PEER_BUDGET_S", DEFAULT_BUDGET_S)),
                    help="seconds before the adapter gives up and reports an error")
    args = ap.parse_args(argv)
    peer.w6_seconds = args.w6_seconds
    n = args.n if args.n is not None else {**DEFAULT_N, "W2P": _w2p.DEFAULT_N[args.body]}.get(args.workload, 0)
    if args.workload == "W3":
        n = W3_COUNT
    elif args.workload == "W5":
        n = W5_COUNT

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
        if not hasattr(peer, "pool_argv"):
            out.write(json.dumps({"system": peer.system, "version": peer.version, "workload": "W2P", **pool,
                                  "error": "no multi-process mode from one command"}) + "\n")
            out.flush()
            return 0
    holder: dict = {}
    try:
        figures = asyncio.run(_run(peer, args.redis_url, args.workload, n, args.budget, holder))
        result = {"system": peer.system, "version": peer.version, "workload": args.workload,
                  "n": n, **pool}
        result.update(figures)
        result["settings"] = peer.settings(args.workload)
    except BaseException as e:  # noqa: BLE001 - report whatever happened, then clean up
        traceback.print_exc(file=sys.stderr)
        ctx = holder.get("ctx")
        if ctx is not None:
            for c in ctx.children:
                print(f"{c.label} log tail:\n{c.tail()}", file=sys.stderr)
        result = {
            "system": peer.system,
            "version": getattr(peer, "version", "?"),
            "workload": args.workload,
            "n": n,
            **pool,
            "error": f"{type(e).__name__}: {e}",
        }
    finally:
        _kill_all()
    out.write(json.dumps(result) + "\n")
    out.flush()
    # The JSON line (figures or "error") is the outcome; exit 0 whenever it was printed.
    return 0
