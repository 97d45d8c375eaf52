"""Peer adapter: fastq-redis (FastQ, a Redis job queue written in C, with Python bindings).
See ../CONTRACT.md.

Run as:  .venv-peers-fastq-redis/bin/python benches/peers/adapters/fastq_redis_peer.py \
             --redis-url URL --workload W1 --n N

The Python module ``fastq`` exposes Queue(name, host, port).push(payload: str, priority),
pop(), stats() and Worker(queue, handler, threads).start()/stop(): no bulk enqueue (push per
job, payload JSON-encoded by the caller), no delayed jobs (the C core has a delayed set for
retries, but the binding cannot schedule a job), and no database number or password (it
always uses db 0; bench:done stays on the bench db given by --redis-url).
Worker: 1 process, 1 worker thread: with 2 or more threads the worker crashed here
(segfault, or a hiredis assertion) or stalled.
"""

import json
import os
import sys
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _rustq_common import ADAPTERS_DIR, Peer, Unsupported, env_int, main

THREADS = env_int("FASTQ_THREADS", 1)


class FastqPeer(Peer):
    system = "fastq-redis"

    def __init__(self):
        from importlib.metadata import version

        self.version = version("fastq-redis")

    def check_workload(self, workload):
        if workload == "W5":
            raise Unsupported(
                "fastq-redis's Python binding has no delayed-job API "
                "(Queue.push(payload, priority) only)"
            )

    def setup(self, url, workload):
        u = urlparse(url)
        if u.password or u.username:
            raise Unsupported("fastq-redis cannot authenticate (Queue(name, host, port) only)")
        os.environ["BENCH_REDIS_URL"] = url
        import fastq

        import _tasks_fastq_redis as t

        fastq.set_log_level(2)
        host, port = t.host_port(url)
        self.t = t
        self.queues = {k: fastq.Queue(t.queue_name(k), host, port) for k in ("noop", "lat", "late")}
        self.db = int((u.path or "/0").lstrip("/") or 0)
        self.workload = workload

    def settings(self, workload):
        s = {
            "enqueue": "Queue.push(json.dumps(p)) per job (no bulk API)",
            "worker": "fastq.Worker(queue, handler, threads=1).start(), 1 process",
            "threads": THREADS,
            "log_level": "WARN",
            "implementation": "C core (hiredis), not Rust",
        }
        if self.db != 0:
            s["db"] = "queue keys in db 0 (the binding cannot select a db)"
        return s

    def _push(self, kind, items):
        push = self.queues[kind].push
        dumps = json.dumps
        for p in items:
            push(dumps(p))

    def enqueue_bulk(self, items):
        self._push("noop", items)

    def dispatch_warm(self, items):
        # W3 runs one worker on the "lat" queue: warm it with lat jobs.
        kind = "lat" if self.workload == "W3" else "noop"
        self._push(kind, items)

    def dispatch_lat(self, item):
        self.queues["lat"].push(json.dumps(item))

    def dispatch_one(self, item):
        self.queues["noop"].push(json.dumps(item))

    def worker_argv(self, workload):
        task = "lat" if workload == "W3" else "noop"
        return (
            [sys.executable, os.path.join(ADAPTERS_DIR, "_tasks_fastq_redis.py"), task],
            {"FASTQ_THREADS": str(THREADS)},
        )


if __name__ == "__main__":
    sys.exit(main(FastqPeer()))
