"""SAQ (Redis queue) adapter for the peer benchmark (see ../CONTRACT.md).

Enqueue: SAQ 0.26 has no fire-and-forget bulk call (``Queue.map`` enqueues concurrently but
then waits for every result), so the producer does what ``map`` does for its enqueue half:
``Queue.enqueue`` run concurrently with asyncio.gather, in windows of SAQ_ENQUEUE_CONCURRENCY
calls, the queue's ``max_concurrent_ops`` raised to the same value. Each job is enqueued with
``ttl=-1`` (job record deleted on completion: no result kept). Delays use ``scheduled=`` (epoch
seconds; SAQ's scheduler upkeep moves due jobs every second, its minimum, since the timer is also
the lock's SETEX seconds).
Worker: ``saq.Worker`` in one process (asyncio), ``concurrency`` tuned for no-op jobs.
Tunables (environment): SAQ_ENQUEUE_CONCURRENCY, SAQ_CONCURRENCY.
"""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_async import AsyncPeerBase, env_int, main

ENQUEUE_CONCURRENCY = env_int("SAQ_ENQUEUE_CONCURRENCY", 20)
CONCURRENCY = env_int("SAQ_CONCURRENCY", 20)
JOB_TTL = -1


class SaqPeer(AsyncPeerBase):
    system = "saq"

    def __init__(self):
        from importlib.metadata import version

        self.version = version("saq")
        self.queue = None

    def settings(self, workload):
        return {
            "enqueue": f"Queue.enqueue x n, asyncio.gather in windows of {ENQUEUE_CONCURRENCY} "
                       f"(max_concurrent_ops={ENQUEUE_CONCURRENCY})",
            "delay": "enqueue(scheduled=time.time()+2); schedule upkeep every 1 s (default, minimum)",
            "worker": "saq.Worker, 1 process, asyncio",
            "concurrency": CONCURRENCY,
            "job_ttl": JOB_TTL,
        }

    async def setup(self, url, workload):
        from saq import Queue

        self.queue = Queue.from_url(url, max_concurrent_ops=ENQUEUE_CONCURRENCY)
        await self.queue.connect()

    async def enqueue_bulk(self, items):
        enq = self.queue.enqueue
        step = ENQUEUE_CONCURRENCY
        for k in range(0, len(items), step):
            await asyncio.gather(*(enq("noop", p=p, ttl=JOB_TTL) for p in items[k:k + step]))

    async def dispatch_lat(self, item):
        await self.queue.enqueue("lat", p=item, ttl=JOB_TTL)

    async def dispatch_late(self, item, delay_s):
        await self.queue.enqueue("late", p=item, ttl=JOB_TTL, scheduled=time.time() + delay_s)

    def worker_argv(self, workload):
        return (
            [sys.executable, "-c", "import _tasks_saq; _tasks_saq.run_worker()"],
            {"SAQ_CONCURRENCY": str(CONCURRENCY)},
        )

    async def close(self):
        if self.queue is not None:
            await self.queue.disconnect()


if __name__ == "__main__":
    sys.exit(main(SaqPeer()))
