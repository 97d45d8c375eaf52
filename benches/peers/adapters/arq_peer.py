"""arq adapter for the peer benchmark (see ../CONTRACT.md).

Enqueue: arq has no bulk API; ``ArqRedis.enqueue_job`` (one WATCH/MULTI/EXEC transaction per
job, so one pooled connection per call in flight) is run concurrently with asyncio.gather in
windows of ARQ_ENQUEUE_CONCURRENCY calls. Delays use ``_defer_by``.
Worker: ``arq.worker.Worker`` in one process (async tasks), max_jobs / poll_delay tuned for
no-op jobs, results not kept (keep_result=0), result logging off.
Tunables (environment): ARQ_ENQUEUE_CONCURRENCY, ARQ_MAX_JOBS, ARQ_POLL_DELAY.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_async import AsyncPeerBase, env_float, env_int, main

ENQUEUE_CONCURRENCY = env_int("ARQ_ENQUEUE_CONCURRENCY", 256)
MAX_JOBS = env_int("ARQ_MAX_JOBS", 50)
POLL_DELAY = env_float("ARQ_POLL_DELAY", 0.01)
KEEP_RESULT = 0


class ArqPeer(AsyncPeerBase):
    system = "arq"

    def __init__(self):
        import arq

        self.version = getattr(arq, "VERSION", None) or arq.version.VERSION
        self.pool = None

    def settings(self, workload):
        return {
            "enqueue": f"ArqRedis.enqueue_job x n, asyncio.gather in windows of {ENQUEUE_CONCURRENCY}",
            "delay": "enqueue_job(_defer_by=2)",
            "worker": "arq.worker.Worker, 1 process, asyncio",
            "max_jobs": MAX_JOBS,
            "poll_delay_s": POLL_DELAY,
            "keep_result_s": KEEP_RESULT,
            "log_results": False,
        }

    async def setup(self, url, workload):
        from arq.connections import RedisSettings, create_pool

        rs = RedisSettings.from_dsn(url)
        # W6 keeps up to 500 single enqueues in flight: a connection each, not the bench's cap.
        rs.max_connections = (500 if workload == "W6" else ENQUEUE_CONCURRENCY) + 4
        self.pool = await create_pool(rs)

    async def enqueue_bulk(self, items):
        enq = self.pool.enqueue_job
        step = ENQUEUE_CONCURRENCY
        for k in range(0, len(items), step):
            await asyncio.gather(*(enq("noop", p) for p in items[k:k + step]))

    async def dispatch_lat(self, item):
        await self.pool.enqueue_job("lat", item)

    async def dispatch_one_async(self, item):
        await self.pool.enqueue_job("noop", item)

    async def dispatch_late(self, item, delay_s):
        await self.pool.enqueue_job("late", item, _defer_by=delay_s)

    def worker_argv(self, workload):
        return (
            [sys.executable, "-c", "import _tasks_arq; _tasks_arq.run_worker()"],
            {
                "ARQ_MAX_JOBS": str(MAX_JOBS),
                "ARQ_POLL_DELAY": str(POLL_DELAY),
                "ARQ_KEEP_RESULT": str(KEEP_RESULT),
            },
        )

    async def close(self):
        if self.pool is not None:
            await self.pool.aclose() if hasattr(self.pool, "aclose") else await self.pool.close()


if __name__ == "__main__":
    sys.exit(main(ArqPeer()))
