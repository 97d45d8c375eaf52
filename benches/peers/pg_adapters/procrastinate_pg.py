"""procrastinate on the PostgreSQL bench (CONTRACT.md, "PostgreSQL peers").

Bulk enqueue: ``Task.batch_defer(*kwargs)`` (one call of procrastinate_defer_jobs_v1 with an
array of jobs), in chunks of CHUNK jobs, on the sync psycopg connector. Worker
(_procrastinate_worker.py): one process, ``App.run_worker_async`` with async tasks and
``concurrency`` CONCURRENCY (jobs fetched and run at once; each fetch takes one job).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _pg_common import PgPeer, main

# Measured on the bench machine (W1, 100,000 jobs: chunks of 1,000 7.8k/s, 10,000 6.8k/s,
# 100,000 6.5k/s; W2, 2,000 jobs: concurrency 1 269/s, 10 171/s, 50 159/s): the best kept.
CHUNK = int(os.environ.get("PROCRASTINATE_BENCH_CHUNK", "1000"))
CONCURRENCY = os.environ.get("PROCRASTINATE_BENCH_CONCURRENCY", "1")


class ProcrastinatePeer(PgPeer):
    system = "procrastinate"

    def setup(self, dsn):
        from importlib.metadata import version

        os.environ["BENCH_DSN"] = dsn  # read by _procrastinate_tasks
        from _procrastinate_tasks import app, lat, noop

        self.version = version("procrastinate")
        self.app, self.noop, self.lat = app, noop, lat
        self.app.open()
        self.app.schema_manager.apply_schema()

    def enqueue_bulk(self, items):
        for k in range(0, len(items), CHUNK):
            self.noop.batch_defer(*items[k:k + CHUNK])

    def dispatch_lat(self, item):
        self.lat.defer(**item)

    def worker_argv(self, workload):
        return ["_procrastinate_worker.py", CONCURRENCY]

    def settings(self, workload):
        return {"enqueue": f"Task.batch_defer(*kwargs), chunks of {CHUNK:,}, sync psycopg connector",
                "worker": f"App.run_worker_async(concurrency={CONCURRENCY}), async tasks, 1 process, "
                "LISTEN/NOTIFY on, jobs kept (delete_jobs=never, the default)"}

    def close(self):
        self.app.close()


if __name__ == "__main__":
    sys.exit(main(ProcrastinatePeer()))
