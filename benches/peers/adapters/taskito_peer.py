"""Peer adapter: taskito (Rust core, Python API) on its Redis storage backend. See ../CONTRACT.md.

Run as:  .venv-peers-taskito/bin/python benches/peers/adapters/taskito_peer.py \
             --redis-url URL --workload W1 --n N

taskito's default store is SQLite; it also has PostgreSQL and Redis backends
(``Queue(backend="redis", db_url=...)``), used here so it shares the bench Redis.
Enqueue: ``Queue.enqueue_many`` (one native ``enqueue_batch`` call per list).
Worker: ``Queue.run_worker()`` in one process, TASKITO_THREADS worker threads; the Rust
scheduler polls Redis every TASKITO_POLL_MS ms when idle and claims TASKITO_BATCH jobs a round.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _rustq_common import ADAPTERS_DIR, Peer, env_int, main

THREADS = env_int("TASKITO_THREADS", 8)
POLL_MS = env_int("TASKITO_POLL_MS", 5)
BATCH = env_int("TASKITO_BATCH", 64)
CHUNK = env_int("TASKITO_CHUNK", 0)


class TaskitoPeer(Peer):
    system = "taskito"

    def setup(self, url, workload):
        from importlib.metadata import version

        os.environ["BENCH_REDIS_URL"] = url
        self.version = version("taskito")
        import _tasks_taskito as t

        self.t = t
        self.q = t.queue

    def settings(self, workload):
        if workload == "W2P":
            return {
                "store": 'Redis (Queue(backend="redis", db_url=URL))',
                "enqueue": f"{self.body} task: task.map([(payload,), ...]), as in W1",
                "worker": f"taskito worker --app _tasks_taskito:queue --pool prefork, Queue(workers={self.processes}) "
                "(the Rust scheduler in the parent, one child process per worker slot, one job at a time each)",
                "scheduler_poll_interval_ms": POLL_MS,
                "scheduler_batch_size": BATCH,
            }
        s = {
            "store": 'Redis (Queue(backend="redis", db_url=URL))',
            "enqueue": "task.map([(payload,), ...]) = Queue.enqueue_many (native enqueue_batch)"
            + (f" in chunks of {CHUNK}" if CHUNK else " (one batch)"),
            "worker": "Queue.run_worker() (thread pool), 1 process",
            "threads": THREADS,
            "scheduler_poll_interval_ms": POLL_MS,
            "scheduler_batch_size": BATCH,
            "max_retries": 0,
            "log_level": "WARNING",
            "serializer": "default (msgpack, cloudpickle fallback)",
        }
        if workload == "W5":
            s["delay"] = "task.apply_async(args, delay=2)"
        return s

    def enqueue_bulk(self, items):
        # Queue.enqueue_many with the task's options
        enqueue_many = (self.t.cpu if self.body == "cpu" else self.t.noop).map
        args = [(p,) for p in items]
        if CHUNK:
            for k in range(0, len(args), CHUNK):
                enqueue_many(args[k:k + CHUNK])
        else:
            enqueue_many(args)

    def dispatch_lat(self, item):
        self.t.lat.delay(item)

    def dispatch_one(self, item):
        self.t.noop.delay(item)

    def dispatch_late(self, item, delay_s):
        self.t.late.apply_async(args=(item,), delay=delay_s)

    def worker_argv(self, workload):
        return (
            [sys.executable, os.path.join(ADAPTERS_DIR, "_tasks_taskito.py")],
            {
                "TASKITO_THREADS": str(THREADS),
                "TASKITO_POLL_MS": str(POLL_MS),
                "TASKITO_BATCH": str(BATCH),
                "TASKITO_LOG_LEVEL": "WARNING",  # no per-task "received"/"succeeded" lines
            },
        )

    def pool_argv(self):
        # taskito's prefork pool: as many children as the Queue's `workers`.
        _, env = self.worker_argv("W2P")
        env["TASKITO_THREADS"] = str(self.processes)
        # The children's interpreter: by default the one the venv's python links to, which
        # cannot import taskito from outside the venv.
        env["TASKITO_PYTHON"] = sys.executable
        taskito = os.path.join(os.path.dirname(sys.executable), "taskito")
        return [taskito, "worker", "--app", "_tasks_taskito:queue", "--pool", "prefork"], env

    def close(self):
        q = getattr(self, "q", None)
        if q is not None:
            q.close()


if __name__ == "__main__":
    sys.exit(main(TaskitoPeer()))
