"""Peer adapter: RQ (python-rq) on Redis. See CONTRACT.md.

Run as:  <peers python> benches/peers/adapters/rq_peer.py --redis-url URL --workload W1 --n N

(Named rq_peer.py, not rq.py: run as a script its folder is sys.path[0], and a file rq.py
there would shadow the rq package.)
"""

import os
import sys
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_sync import PeerBase, main

QUEUE = "bench"
# enqueue_many puts every job of one call into one MULTI/EXEC pipeline; calls of 1,000 jobs
# were ~10% faster here than one call for all n (n=100,000), so the list goes in chunks.
CHUNK = int(os.environ.get("PEER_RQ_CHUNK", "1000")) or None


class RQPeer(PeerBase):
    system = "rq"

    def setup(self, url, workload):
        import redis
        import rq
        from rq import Queue

        self.url = url
        self.version = rq.__version__
        self.Queue = Queue
        self.conn = redis.Redis.from_url(url)
        self.q = Queue(QUEUE, connection=self.conn)

    def settings_for(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{self.body} task: Queue.enqueue_many in chunks of {CHUNK}, result_ttl=0, as in W1",
                "worker": f"rq worker-pool -n {self.processes} --worker-class rq.SimpleWorker --quiet "
                "(a pool process that forks one worker process each, one job at a time)",
            }
        s = {
            "enqueue": "Queue.enqueue_many([Queue.prepare_data(...)]) (one MULTI/EXEC pipeline per call)"
            + (f", chunks of {CHUNK}" if CHUNK else ""),
            "job_options": "result_ttl=0 (no result kept)",
            "worker": "rq worker --worker-class rq.SimpleWorker (runs jobs in the worker process, "
            "no fork per job) --quiet, 1 process",
            "serializer": "default (pickle)",
        }
        if workload == "W5":
            s["delay"] = "Queue.enqueue_in(timedelta(seconds=2)); worker --with-scheduler " \
                         "(scheduler polls every 1 s, not configurable)"
        return s

    def enqueue_bulk(self, items):
        prep = self.Queue.prepare_data
        q = self.q
        task = f"_tasks_rq.{'cpu' if self.body == 'cpu' else 'noop'}"
        if CHUNK:
            for k in range(0, len(items), CHUNK):
                q.enqueue_many([prep(task, args=(p,), result_ttl=0) for p in items[k:k + CHUNK]])
        else:
            q.enqueue_many([prep(task, args=(p,), result_ttl=0) for p in items])

    def dispatch_lat(self, item):
        self.q.enqueue("_tasks_rq.lat", item, result_ttl=0)

    def dispatch_one(self, item):
        self.q.enqueue("_tasks_rq.noop", item, result_ttl=0)

    def dispatch_late(self, item, delay_s):
        self.q.enqueue_in(timedelta(seconds=delay_s), "_tasks_rq.late", item, result_ttl=0)

    def worker_argv(self, workload):
        argv = [
            "rq.cli", "worker",
            "--url", self.url,
            "--worker-class", "rq.SimpleWorker",
            "--quiet",
            QUEUE,
        ]
        if workload == "W5":
            argv.insert(-1, "--with-scheduler")
        return argv, {}

    def pool_argv(self):
        return [
            "rq.cli", "worker-pool",
            "--url", self.url,
            "--num-workers", str(self.processes),
            "--worker-class", "rq.SimpleWorker",
            "--quiet",
            QUEUE,
        ], {}


if __name__ == "__main__":
    sys.exit(main(RQPeer()))
