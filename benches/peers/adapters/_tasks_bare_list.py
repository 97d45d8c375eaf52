"""The worker of the bare-list reference (bare_list_peer.py): 4 threads pop JSON payloads and
run the contract's task bodies with redis-py."""

import json
import os
import threading
import time

import redis

QUEUE = "bare:q"


def run() -> None:
    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    while True:
        got = r.lpop(QUEUE, 64)
        if not got:
            kv = r.blpop([QUEUE], timeout=1)
            if kv is None:
                continue
            got = [kv[1]]
        for raw in got:
            kind, _payload = json.loads(raw)
            if kind == "lat":
                r.rpush("bench:lat", time.time())
            r.incr("bench:done")


if __name__ == "__main__":
    threads = [threading.Thread(target=run, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
