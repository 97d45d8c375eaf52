"""Peer adapter: Huey (RedisHuey). See CONTRACT.md.

Run as:  <peers python> benches/peers/adapters/huey_peer.py --redis-url URL --workload W1 --n N
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_sync import PeerBase, main

WORKERS = int(os.environ.get("PEER_HUEY_WORKERS", "16"))


class HueyPeer(PeerBase):
    system = "huey"

    def setup(self, url, workload):
        os.environ["BENCH_REDIS_URL"] = url  # read by _tasks_huey at import
        import huey

        import _tasks_huey as t

        self.version = huey.__version__
        self.t = t

    def settings_for(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{self.body} task: task.map(payloads), as in W1",
                "worker": f"huey_consumer -k process -w {self.processes} -n -C -q (a consumer process "
                "with the scheduler, and one worker process per -w, one task at a time each: "
                "huey has no threads inside its worker processes)",
            }
        return {
            "enqueue": "task.map(payloads) (Huey's bulk call; one LPUSH per task, no pipelined bulk API)",
            "app": "RedisHuey(results=False, utc=True), blocking BRPOP dequeue (default)",
            "worker": f"huey_consumer -k thread -w {WORKERS} -n (no periodic) -C (no health check) -q, "
            "1 process (4-32 threads drained within noise of each other here; more threads overlap "
            "the BRPOP round trips)",
            "delay": "task.schedule(args, delay=2); the consumer's scheduler checks every 1 s "
            "(its minimum, -s is an integer >= 1)",
        }

    def enqueue_bulk(self, items):
        (self.t.cpu if self.body == "cpu" else self.t.noop).map(items)

    def dispatch_lat(self, item):
        self.t.lat(item)

    def dispatch_one(self, item):
        self.t.noop(item)

    def dispatch_late(self, item, delay_s):
        self.t.late.schedule(args=(item,), delay=delay_s)

    def worker_argv(self, workload):
        return [
            "huey.bin.huey_consumer", "_tasks_huey.huey",
            "-k", "thread", "-w", str(WORKERS),
            "-n", "-C", "-q",
        ], {}

    def pool_argv(self):
        return [
            "huey.bin.huey_consumer", "_tasks_huey.huey",
            "-k", "process", "-w", str(self.processes),
            "-n", "-C", "-q",
        ], {}


if __name__ == "__main__":
    sys.exit(main(HueyPeer()))
