"""fastjobs' PostgreSQL store on the PostgreSQL bench (CONTRACT.md, "PostgreSQL peers").

Bulk enqueue: ``Job.dispatch_many(list)`` (the engine's binary COPY, chunks of 10,000). Worker:
``fastjobs worker _fastjobs_pg_jobs --concurrency C``, one process (sync handlers, C threads).
The schema: ``fastjobs db init``.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _pg_common import PgPeer, main

CONCURRENCY = os.environ.get("FASTJOBS_BENCH_CONCURRENCY", "1")


class FastjobsPgPeer(PgPeer):
    system = "fastjobs"

    def setup(self, dsn):
        import fastjobs

        subprocess.run([sys.executable, "-m", "fastjobs", "db", "init", dsn], check=True, stdout=sys.stderr)
        fastjobs.configure(dsn)
        import _fastjobs_pg_jobs as jobs

        self.version = fastjobs.__version__
        self.jobs = jobs
        os.environ["FASTJOBS_URL"] = dsn  # the worker's

    def enqueue_bulk(self, items):
        self.jobs.BenchNoop.dispatch_many(items)

    def dispatch_lat(self, item):
        self.jobs.BenchLat.dispatch(item).send()

    def worker_argv(self, workload):
        conc = "4" if workload == "W3" else CONCURRENCY
        return ["-m", "fastjobs", "worker", "_fastjobs_pg_jobs", "--queue", "bench", "--concurrency", conc,
                "--log-level", "WARNING"]

    def settings(self, workload):
        conc = "4" if workload == "W3" else CONCURRENCY
        return {"enqueue": "Job.dispatch_many(list) (binary COPY, chunks of 10,000)",
                "worker": f"fastjobs worker --concurrency {conc} (sync handler threads, adaptive prefetch), 1 process"}


if __name__ == "__main__":
    sys.exit(main(FastjobsPgPeer()))
