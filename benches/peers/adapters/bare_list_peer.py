"""Reference, not a peer: bare Redis lists with no queue semantics at all (no ids, leases,
acknowledgements, retries or results). The producer RPUSHes JSON payloads (pipelined in
chunks of 10,000 for W1), the worker is 4 threads popping them (LPOP of up to 64, BLPOP
when empty) and running the same task bodies. Its figures are what redis-py and this
machine allow any Redis queue: the floor of W3 and the ceiling of W2 with the INCR body.

Run as:  .venv/bin/python benches/peers/adapters/bare_list_peer.py --redis-url URL --workload W1 --n N
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_sync import PeerBase, main

QUEUE = "bare:q"


class BareListPeer(PeerBase):
    system = "bare_list"

    def setup(self, url, workload):
        import redis

        self.version = "redis-py " + redis.__version__
        self.r = redis.Redis.from_url(url)
        self.url, self.ar = url, None

    def settings_for(self, workload):
        if workload == "W6":
            return {"dispatch": "RPUSH of one JSON payload per call: redis.asyncio (async), "
                    "one redis.Redis shared by the threads"}
        return {
            "enqueue": "RPUSH of JSON payloads, chunks of 10,000 in one pipeline (redis-py + hiredis)",
            "worker": "_tasks_bare_list: 4 threads, LPOP count 64 then BLPOP, 1 process",
        }

    def enqueue_bulk(self, items):
        p = self.r.pipeline(transaction=False)
        for i in range(0, len(items), 10_000):
            p.rpush(QUEUE, *[json.dumps(["noop", x]) for x in items[i : i + 10_000]])
        p.execute()

    def dispatch_warm(self, items):
        self.enqueue_bulk(items)

    def dispatch_lat(self, item):
        self.r.rpush(QUEUE, json.dumps(["lat", item]))

    def dispatch_one(self, item):
        self.r.rpush(QUEUE, json.dumps(["noop", item]))

    async def dispatch_one_async(self, item):
        if self.ar is None:  # created on W6's event loop, which it binds to
            import redis.asyncio

            # redis-py 8's async pool stops at 100 connections; W6 keeps up to 500 calls in flight.
            self.ar = redis.asyncio.Redis.from_url(self.url, max_connections=1024)
        await self.ar.rpush(QUEUE, json.dumps(["noop", item]))

    def dispatch_late(self, item, delay_s):
        raise NotImplementedError("reference only: a bare list has no delayed jobs")

    def worker_argv(self, workload):
        return ["_tasks_bare_list"], {}


if __name__ == "__main__":
    sys.exit(main(BareListPeer()))
