"""pgqueuer on the PostgreSQL bench (CONTRACT.md, "PostgreSQL peers").

Bulk enqueue: ``Queries.enqueue`` with lists (one INSERT ... SELECT FROM unnest per call), in
chunks of CHUNK jobs. Worker (_pgqueuer_worker.py): one process, ``QueueManager.run`` with
async entrypoints and ``batch_size`` BATCH (jobs dequeued per query; default 10).
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _pg_common import PgPeer, main

# Measured on the bench machine (W1, 100,000 jobs: chunks of 1,000 23.7k/s, 10,000 23.9k/s,
# 100,000 17.3k/s; W2, 20,000 jobs: batch_size 10 4.1k/s, 100 10.7k/s, 1,000 8.7k/s): the best kept.
CHUNK = int(os.environ.get("PGQUEUER_BENCH_CHUNK", "10000"))
BATCH = os.environ.get("PGQUEUER_BENCH_BATCH", "100")


class PgqueuerPeer(PgPeer):
    system = "pgqueuer"

    def setup(self, dsn):
        import asyncpg
        import pgqueuer
        from pgqueuer import AsyncpgDriver, Queries

        self.version = pgqueuer.__version__
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(dsn))
        self.q = Queries(AsyncpgDriver(self.conn))
        self.loop.run_until_complete(self.q.install())

    def enqueue_bulk(self, items):
        for k in range(0, len(items), CHUNK):
            part = items[k:k + CHUNK]
            self.loop.run_until_complete(
                self.q.enqueue(["noop"] * len(part), [json.dumps(p).encode() for p in part], [0] * len(part)))

    def dispatch_lat(self, item):
        self.loop.run_until_complete(self.q.enqueue("lat", json.dumps(item).encode()))

    def worker_argv(self, workload):
        return ["_pgqueuer_worker.py", BATCH]

    def settings(self, workload):
        return {"enqueue": f"Queries.enqueue(lists), chunks of {CHUNK:,}",
                "worker": f"QueueManager.run(batch_size={BATCH}), async entrypoints, 1 process, asyncpg"}

    def close(self):
        self.loop.run_until_complete(self.conn.close())


if __name__ == "__main__":
    sys.exit(main(PgqueuerPeer()))
