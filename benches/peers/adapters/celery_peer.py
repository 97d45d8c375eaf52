"""Peer adapter: Celery with the Redis broker. See CONTRACT.md.

Run as:  <peers python> benches/peers/adapters/celery_peer.py --redis-url URL --workload W1 --n N

(Named celery_peer.py, not celery.py: run as a script its folder is sys.path[0], and a file
celery.py there would shadow the celery package.)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_sync import PeerBase, main

POOL = os.environ.get("PEER_CELERY_POOL", "threads")
THREADS = int(os.environ.get("PEER_CELERY_THREADS", "4"))
PREFETCH = int(os.environ.get("PEER_CELERY_PREFETCH", "4"))
# W2P: the prefork pool (one child process per --concurrency slot, each running one task at a
# time), messages prefetched by the parent: multiplier x children. Celery's default 4 drained
# as fast as 1, 16 or 64 here, with either body.
POOL_PREFETCH = int(os.environ.get("PEER_CELERY_POOL_PREFETCH", "4"))


class CeleryPeer(PeerBase):
    system = "celery"

    def setup(self, url, workload):
        os.environ["BENCH_REDIS_URL"] = url  # read by _tasks_celery at import
        import celery

        import _tasks_celery as t

        self.version = celery.__version__
        self.t = t
        self.app = t.app

    def settings_for(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{self.body} task: apply_async in a loop sharing one producer, as in W1",
                "worker": f"celery worker --pool=prefork --concurrency={self.processes} "
                f"--prefetch-multiplier={POOL_PREFETCH} --without-gossip --without-mingle --without-heartbeat "
                "(one parent process that fetches, and one child per slot, one task at a time each)",
            }
        return {
            "enqueue": "task.apply_async(args) in a loop sharing one producer "
            "(app.producer_or_acquire()); group(...).apply_async() and .delay() measured slower; "
            "chunks not used (it merges many calls into one message)",
            "app": "Redis broker, no result backend, task_ignore_result, json serializer, "
            "task events off",
            "worker": f"celery worker --pool={POOL} --concurrency={THREADS if POOL == 'threads' else 1} "
            f"--prefetch-multiplier={PREFETCH} --without-gossip --without-mingle --without-heartbeat "
            "--loglevel=WARNING, 1 process",
            "pool_choice": "threads x4 drains as fast as solo and has the same W3 latency, but solo "
            "runs ETA timers on kombu's event loop, which fires at most 10 due timers per pass and then "
            "sleeps 1 s (W5 p50 of seconds); the threads pool keeps them on its timer thread",
            "delay": "apply_async(countdown=2) (ETA held by the worker)",
        }

    def enqueue_bulk(self, items):
        task = self.t.cpu if self.body == "cpu" else self.t.noop
        with self.app.producer_or_acquire() as producer:
            for p in items:
                task.apply_async((p,), producer=producer)

    def dispatch_lat(self, item):
        self.t.lat.apply_async((item,))

    def dispatch_one(self, item):
        self.t.noop.apply_async((item,))

    def dispatch_late(self, item, delay_s):
        self.t.late.apply_async((item,), countdown=delay_s)

    def worker_argv(self, workload):
        conc = THREADS if POOL == "threads" else 1
        return [
            "celery", "-A", "_tasks_celery", "worker",
            f"--pool={POOL}", f"--concurrency={conc}",
            f"--prefetch-multiplier={PREFETCH}",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel=WARNING", "-Q", "bench", "-n", "bench@%h",
        ], {"PEER_CELERY_PREFETCH": str(PREFETCH)}

    def pool_argv(self):
        return [
            "celery", "-A", "_tasks_celery", "worker",
            "--pool=prefork", f"--concurrency={self.processes}",
            f"--prefetch-multiplier={POOL_PREFETCH}",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel=WARNING", "-Q", "bench", "-n", "bench@%h",
        ], {"PEER_CELERY_PREFETCH": str(POOL_PREFETCH)}


if __name__ == "__main__":
    sys.exit(main(CeleryPeer()))
