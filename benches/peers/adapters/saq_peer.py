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
# W2P: jobs in flight per worker process, per task body (SAQ_POOL_CONCURRENCY overrides): W2's
# 20 for the INCR body; 8 for the cpu body (at 2 processes 15-25% ahead of 1; 2 no better).
POOL_CONCURRENCY = {"incr": 20, "cpu": 8}


class SaqPeer(AsyncPeerBase):
    system = "saq"

    def __init__(self):
        from importlib.metadata import version

        self.version = version("saq")
        self.queue = None

    def pool_concurrency(self):
        return env_int("SAQ_POOL_CONCURRENCY", POOL_CONCURRENCY[self.body])

    def settings(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{self.body} job: Queue.enqueue x n, asyncio.gather in windows of "
                           f"{ENQUEUE_CONCURRENCY}, as in W1",
                "worker": f"saq _tasks_saq.settings --workers {self.processes} --quiet "
                          "(a worker in the process saq starts, and one in each process it forks for "
                          "--workers beyond 1, asyncio)",
                "concurrency": self.pool_concurrency(),
                "job_ttl": JOB_TTL,
            }
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

        # W6 keeps up to 500 single enqueues in flight: let SAQ's throttle allow them all.
        ops = 500 if workload == "W6" else ENQUEUE_CONCURRENCY
        self.queue = Queue.from_url(url, max_concurrent_ops=ops)
        await self.queue.connect()

    async def enqueue_bulk(self, items):
        enq = self.queue.enqueue
        task = "cpu" if self.body == "cpu" else "noop"
        step = ENQUEUE_CONCURRENCY
        for k in range(0, len(items), step):
            await asyncio.gather(*(enq(task, p=p, ttl=JOB_TTL) for p in items[k:k + step]))

    async def dispatch_lat(self, item):
        await self.queue.enqueue("lat", p=item, ttl=JOB_TTL)

    async def dispatch_one_async(self, item):
        await self.queue.enqueue("noop", p=item, ttl=JOB_TTL)

    async def dispatch_late(self, item, delay_s):
        await self.queue.enqueue("late", p=item, ttl=JOB_TTL, scheduled=time.time() + delay_s)

    def worker_argv(self, workload):
        return (
            [sys.executable, "-c", "import _tasks_saq; _tasks_saq.run_worker()"],
            {"SAQ_CONCURRENCY": str(CONCURRENCY)},
        )

    def pool_argv(self):
        return (
            [sys.executable, "-m", "saq", "_tasks_saq.settings", "--workers", str(self.processes), "--quiet"],
            {"SAQ_CONCURRENCY": str(self.pool_concurrency())},
        )

    async def close(self):
        if self.queue is not None:
            await self.queue.disconnect()


if __name__ == "__main__":
    sys.exit(main(SaqPeer()))
