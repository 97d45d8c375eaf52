"""Peer adapter: ArdiQ (Rust core on tokio, Python API, Redis streams). See ../CONTRACT.md.

Run as:  .venv-peers-ardiq/bin/python benches/peers/adapters/ardiq_peer.py \
             --redis-url URL --workload W1 --n N
(ardiq needs Python >= 3.12.)

Enqueue: ``Ardiq.enqueue_many([task.prepare(p), ...])`` (one native ``enqueue_many`` call,
sent in one round trip), in chunks of ARDIQ_CHUNK jobs when set.
Worker: ``python -m ardiq run _tasks_ardiq:app --quiet`` (the project's CLI), 1 process,
async tasks on the worker's event loop, concurrency/prefetch tuned for no-op jobs,
results dropped (result_ttl_ms=0), no retries.
Delay: ``task.options(delay_ms=2000).enqueue(p)``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _rustq_common import Peer, env_int, main

CONCURRENCY = env_int("ARDIQ_CONCURRENCY", 16)
PREFETCH = env_int("ARDIQ_PREFETCH", 0) or CONCURRENCY * 2
POLL_BLOCK_MS = env_int("ARDIQ_POLL_BLOCK_MS", 50)
ASYNC = env_int("ARDIQ_ASYNC", 1)
CHUNK = env_int("ARDIQ_CHUNK", 0)
# W2P: tasks in flight per worker process, per task body (ARDIQ_POOL_CONCURRENCY overrides):
# W2's 16 for the INCR body; 4 for the cpu body (1, 2, 4 and 16 measured within noise of each
# other at 2 processes, 4 a little ahead).
POOL_CONCURRENCY = {"incr": 16, "cpu": 4}


class ArdiqPeer(Peer):
    system = "ardiq"

    def setup(self, url, workload):
        from importlib.metadata import version

        os.environ["BENCH_REDIS_URL"] = url
        for k, v in self._worker_env().items():
            os.environ[k] = v
        self.version = version("ardiq")
        import _tasks_ardiq as t

        self.t = t
        self.app = t.app

    def _worker_env(self):
        return {
            "ARDIQ_CONCURRENCY": str(CONCURRENCY),
            "ARDIQ_PREFETCH": str(PREFETCH),
            "ARDIQ_POLL_BLOCK_MS": str(POLL_BLOCK_MS),
            "ARDIQ_ASYNC": str(ASYNC),
        }

    def pool_concurrency(self):
        return env_int("ARDIQ_POOL_CONCURRENCY", POOL_CONCURRENCY[self.body])

    def settings(self, workload):
        if workload == "W2P":
            conc = self.pool_concurrency()
            return {
                "enqueue": f"{self.body} task: Ardiq.enqueue_many([task.prepare(p), ...]), as in W1",
                "worker": f"python -m ardiq run _tasks_ardiq:app --workers {self.processes} --quiet"
                + (f" (a supervisor and {self.processes} worker processes)" if self.processes > 1
                   else " (one process: ardiq starts no supervisor for 1)"),
                "tasks": "async def, redis.asyncio client" if ASYNC else "def (run in a thread), redis-py client",
                "concurrency": conc,
                "prefetch": env_int("ARDIQ_PREFETCH", 0) or conc * 2,
                "interpreter": "CPython 3.12 (ardiq needs >= 3.12)",
            }
        s = {
            "enqueue": "Ardiq.enqueue_many([task.prepare(p), ...]) (one round trip per call)"
            + (f", chunks of {CHUNK}" if CHUNK else ", one call"),
            "worker": "python -m ardiq run _tasks_ardiq:app --quiet, 1 process",
            "tasks": "async def, redis.asyncio client" if ASYNC else "def (run in a thread), redis-py client",
            "concurrency": CONCURRENCY,
            "prefetch": PREFETCH,
            "poll_block_ms": POLL_BLOCK_MS,
            "result_ttl_ms": 0,
            "max_retries": 0,
            "serializer": "default (msgpack)",
        }
        if workload == "W5":
            s["delay"] = "task.options(delay_ms=2000).enqueue(p)"
        return s

    def enqueue_bulk(self, items):
        prep = (self.t.cpu if self.body == "cpu" else self.t.noop).prepare
        if CHUNK:
            for k in range(0, len(items), CHUNK):
                self.run(self.app.enqueue_many([prep(p) for p in items[k:k + CHUNK]]))
        else:
            self.run(self.app.enqueue_many([prep(p) for p in items]))

    def dispatch_lat(self, item):
        self.run(self.t.lat.enqueue(item))

    async def dispatch_one_async(self, item):
        await self.t.noop.enqueue(item)

    def dispatch_late(self, item, delay_s):
        self.run(self.t.late.options(delay_ms=int(delay_s * 1000)).enqueue(item))

    def worker_argv(self, workload):
        return [sys.executable, "-m", "ardiq", "run", "_tasks_ardiq:app", "--quiet"], self._worker_env()

    def pool_argv(self):
        conc = self.pool_concurrency()
        env = dict(self._worker_env(), ARDIQ_CONCURRENCY=str(conc),
                   ARDIQ_PREFETCH=str(env_int("ARDIQ_PREFETCH", 0) or conc * 2))
        return [sys.executable, "-m", "ardiq", "run", "_tasks_ardiq:app", "--workers", str(self.processes),
                "--quiet"], env


if __name__ == "__main__":
    sys.exit(main(ArdiqPeer()))
