"""Peer adapter: mayu (Rust core, Python API, Redis broker). See ../CONTRACT.md.

Run as:  .venv-peers-mayu/bin/python benches/peers/adapters/mayu_peer.py \
             --redis-url URL --workload W1 --n N
(mayu needs Python >= 3.13; it is built for free-threaded Python, but PyPI has free-threaded
wheels only for 3.14t, which this machine does not have, so it runs on a GIL 3.13 build.)

Enqueue: mayu has no bulk-enqueue API (its Client has `enqueue` only); ``task.send(p)`` per
job, from MAYU_ENQUEUE_THREADS threads when > 1 (the native client releases the GIL).
Worker: ``python -m mayu worker _tasks_mayu:app --mode thread --processes 1`` with
MAYU_THREADS threads and --prefetch-multiplier MAYU_PREFETCH, log level WARNING, results off.
Delay: ``task.send(p, countdown=2)``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _rustq_common import Peer, env_int, main

THREADS = env_int("MAYU_THREADS", 8)
PREFETCH = env_int("MAYU_PREFETCH", 2)
ASYNC = env_int("MAYU_ASYNC", 0)
ENQ_THREADS = env_int("MAYU_ENQUEUE_THREADS", 16)
# W2P: mayu's --processes, per task body: thread mode with 16 threads a process for the INCR
# body (measured: 8 threads ~6k jobs/s at 2 processes, 16 and 32 ~8.5k); for the cpu body its
# process mode (one task at a time a process, what mayu picks on a GIL build), which drained as
# fast as thread mode with 1 thread and much faster than with 2. MAYU_BENCH_MODE and
# MAYU_BENCH_POOL_THREADS override (not MAYU_*: mayu reads some of those itself).
POOL_MODE = {"incr": "thread", "cpu": "process"}
POOL_THREADS = {"incr": 16, "cpu": 1}


class MayuPeer(Peer):
    system = "mayu"

    def setup(self, url, workload):
        from importlib.metadata import version

        os.environ["BENCH_REDIS_URL"] = url
        os.environ["MAYU_ASYNC"] = str(ASYNC)
        self.version = version("mayu")
        import _tasks_mayu as t

        self.t = t
        self.pool = None
        if ENQ_THREADS > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(ENQ_THREADS)

    def pool_mode(self):
        return os.environ.get("MAYU_BENCH_MODE") or POOL_MODE[self.body]

    def pool_threads(self):
        return 1 if self.pool_mode() == "process" else env_int("MAYU_BENCH_POOL_THREADS", POOL_THREADS[self.body])

    def settings(self, workload):
        if workload == "W2P":
            mode = self.pool_mode()
            return {
                "enqueue": f"{self.body} task: task.send(p) per job from {ENQ_THREADS} threads, as in W1",
                "worker": f"python -m mayu worker --mode {mode} --processes {self.processes} "
                f"--threads {self.pool_threads()} --prefetch-multiplier {PREFETCH}"
                + (" (one process: mayu runs thread mode with 1 process in place)"
                   if mode == "thread" and self.processes == 1
                   else f" (a supervisor and {self.processes} worker processes)"),
                "interpreter": "CPython 3.13 (mayu needs >= 3.13)",
            }
        s = {
            "enqueue": "task.send(p) per job (no bulk API)"
            + (f", from {ENQ_THREADS} threads" if ENQ_THREADS > 1 else ", one thread"),
            "worker": "python -m mayu worker --mode thread --processes 1, GIL build (CPython 3.13)",
            "threads": THREADS,
            "prefetch_multiplier": PREFETCH,
            "tasks": "async def, redis.asyncio client" if ASYNC else "def, redis-py client",
            "results": "off (result_ttl=None)",
            "max_retries": 0,
            "log_level": "WARNING",
            "serializer": "msgpack (default)",
        }
        if workload == "W5":
            s["delay"] = "task.send(p, countdown=2)"
        return s

    def enqueue_bulk(self, items):
        send = (self.t.cpu if self.body == "cpu" else self.t.noop).send
        if self.pool is None:
            for p in items:
                send(p)
        else:
            for _ in self.pool.map(send, items, chunksize=256):
                pass

    def dispatch_lat(self, item):
        self.t.lat.send(item)

    def dispatch_one(self, item):
        self.t.noop.send(item)

    def dispatch_late(self, item, delay_s):
        self.t.late.send(item, countdown=delay_s)

    def worker_argv(self, workload):
        return (
            [
                sys.executable, "-m", "mayu", "worker", "_tasks_mayu:app",
                "--mode", "thread", "--processes", "1",
                "--threads", str(THREADS),
                "--prefetch-multiplier", str(PREFETCH),
                "--log-level", "WARNING",
                "--gpu-monitor", "off",
            ],
            {"MAYU_ASYNC": str(ASYNC)},
        )

    def pool_argv(self):
        argv, env = self.worker_argv("W2P")
        argv[argv.index("--mode") + 1] = self.pool_mode()
        argv[argv.index("--processes") + 1] = str(self.processes)
        argv[argv.index("--threads") + 1] = str(self.pool_threads())
        return argv, env

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)


if __name__ == "__main__":
    sys.exit(main(MayuPeer()))
