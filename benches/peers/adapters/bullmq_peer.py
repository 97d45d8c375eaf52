"""BullMQ for Python (the ``bullmq`` package on PyPI) adapter for the peer benchmark
(see ../CONTRACT.md).

Enqueue: ``Queue.addBulk`` (one MULTI/EXEC pipeline of addJob Lua calls) in chunks of
BULLMQ_ADD_CHUNK jobs. Every job has ``removeOnComplete=True`` (no completed-job record or
result kept). Delays: job option ``delay`` (ms).
Worker: one ``bullmq.Worker`` object in its own Python process (asyncio), ``concurrency``
tuned for no-op jobs.
Tunables (environment): BULLMQ_ADD_CHUNK, BULLMQ_CONCURRENCY.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_async import AsyncPeerBase, env_int, main

ADD_CHUNK = env_int("BULLMQ_ADD_CHUNK", 10_000)
CONCURRENCY = env_int("BULLMQ_CONCURRENCY", 10)
QUEUE = "bench"
JOB_OPTS = {"removeOnComplete": True}


class BullmqPeer(AsyncPeerBase):
    system = "bullmq"

    def __init__(self):
        from importlib.metadata import version

        self.version = version("bullmq")
        self.queue = None

    def settings(self, workload):
        return {
            "enqueue": f"Queue.addBulk in chunks of {ADD_CHUNK}",
            "delay": "Queue.add(opts={'delay': 2000})",
            "worker": "bullmq.Worker, 1 process, asyncio",
            "concurrency": CONCURRENCY,
            "job_opts": JOB_OPTS,
        }

    async def setup(self, url, workload):
        from bullmq import Queue

        self.queue = Queue(QUEUE, {"connection": url})

    async def enqueue_bulk(self, items):
        add_bulk = self.queue.addBulk
        step = ADD_CHUNK
        for k in range(0, len(items), step):
            await add_bulk([{"name": "noop", "data": p, "opts": JOB_OPTS}
                            for p in items[k:k + step]])

    async def dispatch_lat(self, item):
        await self.queue.add("lat", item, JOB_OPTS)

    async def dispatch_one_async(self, item):
        await self.queue.add("noop", item, JOB_OPTS)

    async def dispatch_late(self, item, delay_s):
        await self.queue.add("late", item, {**JOB_OPTS, "delay": int(delay_s * 1000)})

    def worker_argv(self, workload):
        return ([sys.executable, "-c", "import _tasks_bullmq; _tasks_bullmq.run_worker()"],
                {"BULLMQ_CONCURRENCY": str(CONCURRENCY)})

    async def close(self):
        if self.queue is not None:
            await self.queue.close()


if __name__ == "__main__":
    sys.exit(main(BullmqPeer()))
