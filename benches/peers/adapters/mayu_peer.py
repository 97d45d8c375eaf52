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

    def settings(self, workload):
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
        send = self.t.noop.send
        if self.pool is None:
            for p in items:
                send(p)
        else:
            for _ in self.pool.map(send, items, chunksize=256):
                pass

    def dispatch_lat(self, item):
        self.t.lat.send(item)

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

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)


if __name__ == "__main__":
    sys.exit(main(MayuPeer()))
