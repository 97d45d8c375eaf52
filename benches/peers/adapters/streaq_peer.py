"""streaq adapter for the peer benchmark (see ../CONTRACT.md).

Enqueue: ``Worker.enqueue_many`` (one non-transactional pipeline of its publish_task Lua
function calls), fed with ``task.enqueue(p)`` objects in chunks of STREAQ_ENQUEUE_CHUNK.
Delays: ``task.enqueue(p).start(delay=2 s)`` (the worker moves due tasks every 0.5 s).
Worker: ``streaq.Worker.run_sync()`` in one process (anyio on asyncio), ``concurrency`` tuned
for no-op jobs; tasks keep no result (ttl=0) and log nothing (silent=True).
Tunables (environment): STREAQ_ENQUEUE_CHUNK, STREAQ_CONCURRENCY, STREAQ_PREFETCH.
"""

import os
import sys
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_async import ADAPTERS_DIR, AsyncPeerBase, env_int, main

ENQUEUE_CHUNK = env_int("STREAQ_ENQUEUE_CHUNK", 10_000)
CONCURRENCY = env_int("STREAQ_CONCURRENCY", 256)
PREFETCH = env_int("STREAQ_PREFETCH", 0)
# W2P: tasks in flight per worker process, per task body (STREAQ_POOL_CONCURRENCY overrides):
# W2's 256 for the INCR body; 16 for the cpu body (at 2 processes ~540 jobs/s, 1-4 ~250-450,
# 64 ~430).
POOL_CONCURRENCY = {"incr": 256, "cpu": 16}


class StreaqPeer(AsyncPeerBase):
    system = "streaq"

    def __init__(self):
        from importlib.metadata import version

        self.version = version("streaq")
        self.t = None
        self._cm = None

    def pool_concurrency(self):
        return env_int("STREAQ_POOL_CONCURRENCY", POOL_CONCURRENCY[self.body])

    def settings(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{self.body} task: Worker.enqueue_many in chunks of {ENQUEUE_CHUNK}, as in W1",
                "worker": f"streaq run _tasks_streaq:worker --workers {self.processes} "
                          "(a worker in the process streaq starts, and one in each process it forks for "
                          "--workers beyond 1, anyio/asyncio)",
                "concurrency": self.pool_concurrency(),
                "prefetch": PREFETCH or "default (= concurrency)",
                "task_options": {"ttl": 0, "silent": True},
            }
        return {
            "enqueue": f"Worker.enqueue_many([task.enqueue(p) ...]) in chunks of {ENQUEUE_CHUNK}",
            "delay": "task.enqueue(p).start(delay=timedelta(seconds=2)); worker promotes due tasks every 0.5 s",
            "worker": "streaq.Worker.run_sync(), 1 process, anyio/asyncio",
            "concurrency": CONCURRENCY,
            "prefetch": PREFETCH or f"default ({CONCURRENCY})",
            "task_options": {"ttl": 0, "silent": True},
        }

    def _env(self):
        return {"STREAQ_CONCURRENCY": str(CONCURRENCY), "STREAQ_PREFETCH": str(PREFETCH)}

    async def setup(self, url, workload):
        os.environ["BENCH_REDIS_URL"] = url
        import _tasks_streaq

        self.t = _tasks_streaq
        # Entering the worker's context connects its Redis client and loads streaq's Lua
        # library (what a producer does before enqueuing).
        self._cm = self.t.worker
        await self._cm.__aenter__()

    async def enqueue_bulk(self, items):
        w = self.t.worker
        enqueue = (self.t.cpu if self.body == "cpu" else self.t.noop).enqueue
        step = ENQUEUE_CHUNK
        for k in range(0, len(items), step):
            await w.enqueue_many([enqueue(p) for p in items[k:k + step]])

    async def dispatch_lat(self, item):
        await self.t.lat.enqueue(item)

    async def dispatch_one_async(self, item):
        await self.t.noop.enqueue(item)

    async def dispatch_late(self, item, delay_s):
        await self.t.late.enqueue(item).start(delay=timedelta(seconds=delay_s))

    def worker_argv(self, workload):
        return ([sys.executable, "-c", "import _tasks_streaq; _tasks_streaq.run_worker()"],
                self._env())

    def pool_argv(self):
        # Through _launch.py: the worker processes streaq forks die with the adapter too.
        return ([sys.executable, os.path.join(ADAPTERS_DIR, "_launch.py"), "streaq", "run", "_tasks_streaq:worker",
                 "--workers", str(self.processes)],
                dict(self._env(), STREAQ_CONCURRENCY=str(self.pool_concurrency())))

    async def close(self):
        if self._cm is not None:
            await self._cm.__aexit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main(StreaqPeer()))
