"""Peer adapter: Dramatiq with the Redis broker. See CONTRACT.md.

Run as:  <peers python> benches/peers/adapters/dramatiq_peer.py --redis-url URL --workload W1 --n N
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_sync import ADAPTERS_DIR, PeerBase, main

THREADS = int(os.environ.get("PEER_DRAMATIQ_THREADS", "8"))
# Consumer idle poll ceiling (ms): dramatiq's Redis consumer polls with an exponential
# backoff capped at worker_timeout (default 1000 ms), set by the env var dramatiq_worker_timeout.
WORKER_TIMEOUT_MS = int(os.environ.get("PEER_DRAMATIQ_WORKER_TIMEOUT", "100"))
# Messages the main-queue consumer may hold (env var dramatiq_queue_prefetch; dramatiq's
# default is 2 x threads). 1000 drained ~10-20% faster than the default here.
PREFETCH = int(os.environ.get("PEER_DRAMATIQ_PREFETCH", "1000"))  # 0: dramatiq's default
# W2P: threads per worker process, per task body (PEER_DRAMATIQ_POOL_THREADS overrides both):
# W2's 8 for the INCR body; 1 for the cpu body (at 2 processes ~540 jobs/s against ~465 with 2
# threads: under the GIL a second thread only adds switching).
POOL_THREADS = {"incr": 8, "cpu": 1}
# ... and messages each process may hold: W2's 1000 for the INCR body; 100 for the cpu body, as
# fast at 2 processes (~690 jobs/s, against ~460 with dramatiq's default of 2 x threads) without
# letting one process take 2 s of work that the other then waits out at the end of a short drain.
POOL_PREFETCH = {"incr": PREFETCH, "cpu": 100}


class DramatiqPeer(PeerBase):
    system = "dramatiq"

    def setup(self, url, workload):
        os.environ["BENCH_REDIS_URL"] = url  # read by _tasks_dramatiq at import
        import dramatiq

        import _tasks_dramatiq as t

        self.version = dramatiq.__version__
        self.t = t

    def pool_threads(self):
        return int(os.environ.get("PEER_DRAMATIQ_POOL_THREADS") or POOL_THREADS[self.body])

    def pool_prefetch(self):
        return int(os.environ.get("PEER_DRAMATIQ_POOL_PREFETCH") or POOL_PREFETCH[self.body])

    def settings_for(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{self.body} actor: actor.send(payload) in a loop, as in W1",
                "worker": f"dramatiq --processes {self.processes} --threads {self.pool_threads()} "
                f"(a supervisor plus {self.processes} worker processes), "
                f"dramatiq_worker_timeout={WORKER_TIMEOUT_MS}, dramatiq_queue_prefetch={self.pool_prefetch() or 'default'}",
            }
        return {
            "enqueue": "actor.send(payload) in a loop (the Redis broker enqueues one message per "
            "Lua call; group(...).run() and broker.enqueue measured no faster; no bulk API)",
            "broker": "RedisBroker, default middleware",
            "worker": f"dramatiq --processes 1 --threads {THREADS} (a supervisor plus one worker process)"
            + (f", dramatiq_worker_timeout={WORKER_TIMEOUT_MS}" if WORKER_TIMEOUT_MS != 1000 else "")
            + (f", dramatiq_queue_prefetch={PREFETCH}" if PREFETCH else ", default prefetch (2 x threads)"),
            "poll": "the Redis consumer polls (5-10 ms first backoff, doubling up to worker_timeout, "
            "default 1000 ms); 100 ms keeps idle polling cheap and cut W5 lateness from ~700 ms to ~100 ms",
            "delay": "actor.send_with_options(args, delay=2000) (delay queue held by the worker)",
        }

    def enqueue_bulk(self, items):
        send = (self.t.cpu if self.body == "cpu" else self.t.noop).send
        for p in items:
            send(p)

    def dispatch_lat(self, item):
        self.t.lat.send(item)

    def dispatch_one(self, item):
        self.t.noop.send(item)

    def dispatch_late(self, item, delay_s):
        self.t.late.send_with_options(args=(item,), delay=int(delay_s * 1000))

    def worker_argv(self, workload):
        env = {"dramatiq_worker_timeout": str(WORKER_TIMEOUT_MS)}
        if PREFETCH:
            env["dramatiq_queue_prefetch"] = str(PREFETCH)
        return [
            "dramatiq", "_tasks_dramatiq",
            "--processes", "1", "--threads", str(THREADS),
            "--path", ADAPTERS_DIR,
        ], env

    def pool_argv(self):
        argv, env = self.worker_argv("W2P")
        argv[argv.index("--processes") + 1] = str(self.processes)
        argv[argv.index("--threads") + 1] = str(self.pool_threads())
        if self.pool_prefetch():
            env["dramatiq_queue_prefetch"] = str(self.pool_prefetch())
        return argv, env


if __name__ == "__main__":
    sys.exit(main(DramatiqPeer()))
