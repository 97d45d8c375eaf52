"""fastjobs itself, measured by the same harness as the peers. See CONTRACT.md.

Run with the project's interpreter (.venv, where fastjobs is built):
    .venv/bin/python benches/peers/adapters/fastjobs_peer.py --redis-url URL --workload W1 --n N
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_sync import PeerBase, main

# W2P: handler threads per worker process, per task body (FASTJOBS_BENCH_CONCURRENCY overrides):
# W2's 4 for the INCR body; 1 for the cpu body (one process drained ~440 jobs/s with 1 thread,
# ~385 with 2 or 4: under the GIL more threads only add switching).
POOL_CONCURRENCY = {"incr": "4", "cpu": "1"}


class FastjobsPeer(PeerBase):
    system = "fastjobs"

    def setup(self, url, workload):
        import _tasks_fastjobs as tasks
        import fastjobs

        self.url = url
        self.version = fastjobs.__version__
        fastjobs.configure(url, prefix="bench")
        self.tasks = tasks

    def pool_concurrency(self):
        return os.environ.get("FASTJOBS_BENCH_CONCURRENCY") or POOL_CONCURRENCY[self.body]

    def settings_for(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{'BenchCpu' if self.body == 'cpu' else 'BenchNoop'}.dispatch_many(list), as in W1",
                "worker": f"fastjobs worker --processes {self.processes} --concurrency {self.pool_concurrency()} "
                "(sync handler threads per process, adaptive prefetch)",
            }
        if workload == "W6":
            return {"dispatch": "await Job.dispatch(p) (async), Job.dispatch(p).send() (threads)"}
        s = {
            "enqueue": "Job.dispatch_many(list) (chunks of 10,000, pipelined; up to 16 records per list element)",
            "worker": f"fastjobs worker --concurrency {self.concurrency(workload)} (sync handler threads, adaptive prefetch), 1 process",
            "serializer": "JSON (orjson's bytes; bulk payloads serialized by the engine)",
        }
        if workload in ("W3", "W5"):
            s["dispatch"] = "Job.dispatch(payload).send() per job" + (" with .delay(2)" if workload == "W5" else "")
        return s

    def enqueue_bulk(self, items):
        (self.tasks.BenchCpu if self.body == "cpu" else self.tasks.BenchNoop).dispatch_many(items)

    def dispatch_lat(self, item):
        self.tasks.BenchLat.dispatch(item).send()

    def dispatch_one(self, item):
        self.tasks.BenchNoop.dispatch(item).send()

    async def dispatch_one_async(self, item):
        await self.tasks.BenchNoop.dispatch(item)  # awaiting a PendingDispatch sends it

    def dispatch_late(self, item, delay_s):
        self.tasks.BenchLate.dispatch(item).delay(delay_s).send()

    @staticmethod
    def concurrency(workload):
        # Several handler threads overlap the INCRs' round trips (measured: 1 thread 6.5k/s,
        # 2 9.0k/s, 4 9.3k/s; async handlers on redis.asyncio 5.8-6.9k/s, FASTJOBS_BENCH_ASYNC=1).
        # W3 too, like bare_list's 4 threads: with one, the next job arrives while that thread
        # still waits for the last one's INCR (measured p50 median 0.377 ms with 1, 0.275 with 4).
        return os.environ.get("FASTJOBS_BENCH_CONCURRENCY", "4")

    def worker_argv(self, workload):
        return ["fastjobs", "worker", "_tasks_fastjobs", "--queue", "bench", "--concurrency", self.concurrency(workload),
                "--log-level", "WARNING"], {"FASTJOBS_URL": self.url, "FASTJOBS_PREFIX": "bench"}

    def pool_argv(self):
        argv = ["fastjobs", "worker", "_tasks_fastjobs", "--queue", "bench", "--concurrency", self.pool_concurrency(),
                "--processes", str(self.processes), "--log-level", "WARNING"]
        return argv, {"FASTJOBS_URL": self.url, "FASTJOBS_PREFIX": "bench"}


if __name__ == "__main__":
    sys.exit(main(FastjobsPeer()))
