"""pgqueuer's worker for the PostgreSQL bench: python _pgqueuer_worker.py BATCH_SIZE"""

import asyncio
import json
import os
import sys
from datetime import timedelta

import asyncpg
from _pg_common import bump, die_with_parent, started
from pgqueuer import AsyncpgDriver, QueueManager
from pgqueuer.queries import Queries


async def run(batch: int) -> None:
    conn = await asyncpg.connect(os.environ["BENCH_DSN"])
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job):
        bump()

    @qm.entrypoint("lat")
    async def lat(job):
        started(json.loads(job.payload)["i"])

    await qm.run(batch_size=batch, dequeue_timeout=timedelta(seconds=5))


if __name__ == "__main__":
    die_with_parent()
    asyncio.run(run(int(sys.argv[1])))
