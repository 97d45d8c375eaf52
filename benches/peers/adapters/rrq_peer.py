"""Peer adapter: rrq (Reliable Redis Queue: Rust orchestrator, Rust producer FFI, Python runner).
See ../CONTRACT.md.

Run as:  .venv-peers-rrq/bin/python benches/peers/adapters/rrq_peer.py \
             --redis-url URL --workload W1 --n N

rrq's worker is the Rust orchestrator ``rrq worker run --config rrq.toml``; it polls Redis
(jobs in a ZSET per queue, one hash per job) and sends each job over a localhost TCP socket to
runner processes that run the Python handlers. The adapter writes a TOML config that starts
one runner process (pool_size = 1, RRQ_MAX_IN_FLIGHT concurrent jobs on it): one worker
"unit" = the orchestrator plus that one Python runner process.

Enqueue: rrq has no bulk API; ``RRQClient.enqueue`` (one native producer call per job, run in
a thread by the client) is run concurrently with asyncio.gather in windows of
RRQ_ENQUEUE_CONCURRENCY calls, on a thread pool of that size.
Delay: ``enqueue(..., {"defer_by_seconds": 2})``.
"""

import asyncio
import os
import socket
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _rustq_common import ADAPTERS_DIR, Peer, env_float, env_int, main

ENQUEUE_CONCURRENCY = env_int("RRQ_ENQUEUE_CONCURRENCY", 32)
MAX_IN_FLIGHT = env_int("RRQ_MAX_IN_FLIGHT", 64)
POLL_DELAY = env_float("RRQ_POLL_DELAY", 0.01)
RESULT_TTL = env_int("RRQ_RESULT_TTL", 1)
QUEUE = "bench"
# W2P: rrq's own multi-process mode is the runner pool, pool_size Python runner processes fed
# by one orchestrator, each with MAX_IN_FLIGHT jobs (also best for the cpu body: with 2 runners,
# 4 in flight drained ~490 jobs/s, 16 ~610, 64 ~670: many in flight hide the orchestrator's hops).


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RrqPeer(Peer):
    system = "rrq"

    def setup(self, url, workload):
        from importlib.metadata import version

        from rrq import RRQClient

        os.environ["BENCH_REDIS_URL"] = url
        self.url = url
        self.version = version("rrq")
        self.client = RRQClient(config={
            "redis_dsn": url,
            "queue_name": QUEUE,
            "max_retries": 0,
            "result_ttl_seconds": RESULT_TTL,
        })
        self.pool = ThreadPoolExecutor(ENQUEUE_CONCURRENCY)
        self.run(self._set_executor())
        self.config_path = None

    async def _set_executor(self):
        asyncio.get_running_loop().set_default_executor(self.pool)

    def settings(self, workload):
        if workload == "W2P":
            return {
                "enqueue": f"{self.body} handler: RRQClient.enqueue x n, as in W1",
                "worker": f"rrq worker run (Rust orchestrator) + runner pool_size = {self.processes} "
                f"Python runner processes, max_in_flight = {MAX_IN_FLIGHT} each",
                "poll_delay_s": POLL_DELAY,
                "result_ttl_s": RESULT_TTL,
            }
        s = {
            "enqueue": f"RRQClient.enqueue x n (no bulk API), asyncio.gather in windows of "
                       f"{ENQUEUE_CONCURRENCY} on {ENQUEUE_CONCURRENCY} threads",
            "worker": "rrq worker run (Rust orchestrator) + 1 Python runner process "
                      "(rrq-runner, async handlers, redis.asyncio client)",
            "runner_pool_size": 1,
            "max_in_flight": MAX_IN_FLIGHT,
            "poll_delay_s": POLL_DELAY,
            "result_ttl_s": RESULT_TTL,
            "max_retries": 0,
            "log": "RUST_LOG=warn (no per-job line)",
        }
        if workload == "W5":
            s["delay"] = 'enqueue(..., {"defer_by_seconds": 2})'
        return s

    async def _enqueue_many(self, fn, items):
        enq = self.client.enqueue
        step = ENQUEUE_CONCURRENCY
        for k in range(0, len(items), step):
            await asyncio.gather(*(enq(fn, {"params": p}) for p in items[k:k + step]))

    def enqueue_bulk(self, items):
        self.run(self._enqueue_many("cpu" if self.body == "cpu" else "noop", items))

    def dispatch_lat(self, item):
        self.run(self.client.enqueue("lat", {"params": item}))

    async def dispatch_one_async(self, item):
        await self.client.enqueue("noop", {"params": item})

    def dispatch_late(self, item, delay_s):
        self.run(self.client.enqueue("late", {"params": item, "defer_by_seconds": delay_s}))

    def _write_config(self, pool_size: int = 1) -> str:
        runner = os.path.join(os.path.dirname(sys.executable), "rrq-runner")
        text = f"""[rrq]
redis_dsn = "{self.url}"
default_queue_name = "{QUEUE}"
default_runner_name = "python"
default_poll_delay_seconds = {POLL_DELAY}
default_max_retries = 0
default_result_ttl_seconds = {RESULT_TTL}

[rrq.runners.python]
type = "socket"
cmd = ["{runner}", "--settings", "_tasks_rrq.runner_settings"]
pool_size = {pool_size}
max_in_flight = {MAX_IN_FLIGHT}
tcp_host = "127.0.0.1"
tcp_port = {_free_port()}
env = {{ PYTHONPATH = "{ADAPTERS_DIR}" }}
"""
        fd, path = tempfile.mkstemp(prefix="rrq-bench-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.config_path = path
        return path

    def worker_argv(self, workload, config=None):
        rrq_bin = os.path.join(os.path.dirname(sys.executable), "rrq")
        return (
            [rrq_bin, "worker", "run", "--config", config or self._write_config(), "--queue", QUEUE],
            {"RUST_LOG": "warn"},
        )

    def pool_argv(self):
        return self.worker_argv("W2P", self._write_config(pool_size=self.processes))

    def close(self):
        if getattr(self, "client", None) is not None:
            self.run(self.client.close())
        if getattr(self, "config_path", None):
            try:
                os.unlink(self.config_path)
            except OSError:
                pass
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown(wait=False)


if __name__ == "__main__":
    sys.exit(main(RrqPeer()))
