"""fastjobs demo (`make demo`): enqueue 100,000 no-op jobs, drain them with a worker, then
measure dispatch -> handler-start latency on the idle worker. Prints a summary and, last, one
JSON line with the figures.

Uses the Redis at $FASTJOBS_URL (default redis://127.0.0.1:6379/0) under a fresh key prefix;
if none answers there, starts a throwaway redis-server (no persistence, temp dir) on a free
port and stops it at the end. $FASTJOBS_URL may name another store (sqlite:///tmp/demo.db,
a PostgreSQL database with the schema, memory://). Settings: DEMO_JOBS (default 100000), DEMO_LATENCY_JOBS (1000),
DEMO_CONCURRENCY (worker threads, default 1).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import fastjobs
from fastjobs import config

N = int(os.environ.get("DEMO_JOBS", "100000"))
LATENCY_N = int(os.environ.get("DEMO_LATENCY_JOBS", "1000"))
CONCURRENCY = int(os.environ.get("DEMO_CONCURRENCY", "1"))
DEADLINE = 45.0  # seconds the drain may take before the demo gives up


class Noop(fastjobs.Job[dict, None]):
    name = "demo.Noop"
    queue = "demo"

    def process(self, payload: dict) -> None:
        return None


class Stamp(fastjobs.Job[float, float]):
    """Returns the time its handler started; the payload is the time it was sent."""

    name = "demo.Stamp"
    queue = "demo-latency"

    def process(self, payload: float) -> float:
        return time.time()


# ---- Redis: the configured one, or a throwaway server ----


class ThrowawayRedis:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("no Redis reachable and no redis-server installed: run `make deps`")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="fastjobs-demo-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def reachable(url: str, prefix: str, wait: float = 0.0) -> bool:
    deadline = time.monotonic() + wait
    while True:
        # result_ttl: the latency jobs' results need not outlive the demo
        fastjobs.configure(url, prefix=prefix, connect_timeout=1.0, result_ttl=300)
        try:
            config.client().ping()
            return True
        except fastjobs.ConnectionError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    prefix = "fjdemo-" + uuid.uuid4().hex[:8]
    url = os.environ.get("FASTJOBS_URL", config.DEFAULT_URL)
    server: ThrowawayRedis | None = None
    if not reachable(url, prefix):
        server = ThrowawayRedis()
        url = server.url
        if not reachable(url, prefix, wait=10):
            server.stop()
            sys.exit(f"redis-server did not start on {url}")
    worker: fastjobs.Worker | None = None
    thread: threading.Thread | None = None
    try:
        where = "throwaway server" if server else "existing store"
        print(f"fastjobs {fastjobs.__version__}: {config.store_name(url)} {config.mask_url(url)} ({where}), key prefix {prefix}")
        # 1. Enqueue, in bulk: one job per payload, chunks written while the next is serialized.
        payloads = [{"i": i} for i in range(N)]
        t0 = time.perf_counter()
        Noop.dispatch_many(payloads)
        enqueue_s = time.perf_counter() - t0
        waiting = fastjobs.Queue(Noop.queue).counts()["waiting"]
        print(f"enqueue : {N:,} jobs in {enqueue_s:.2f}s = {N / enqueue_s:,.0f} jobs/s (Job.dispatch_many); waiting now {waiting:,}")

        # 2. Drain with a worker running in a thread of this process.
        worker = fastjobs.Worker([Noop.queue, Stamp.queue], concurrency=CONCURRENCY, jobs=[Noop, Stamp], grace=5)
        q = fastjobs.Queue(Noop.queue)
        t0 = time.perf_counter()
        thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
        thread.start()
        while True:
            counts = q.counts()
            if counts["completed"] + counts["failed"] >= N:
                break
            if time.perf_counter() - t0 > DEADLINE or not thread.is_alive():
                print(f"drain did not finish within {DEADLINE:.0f}s: {counts}", file=sys.stderr)
                return 1
            time.sleep(0.01)
        drain_s = time.perf_counter() - t0
        print(f"drain   : {counts['completed']:,} completed, {counts['failed']:,} failed in {drain_s:.2f}s "
              f"= {N / drain_s:,.0f} jobs/s (worker in a thread, concurrency {CONCURRENCY})")

        # 3. Latency on the idle worker: one job at a time, each waited for.
        lat: list[float] = []  # dispatch -> handler start
        rtt: list[float] = []  # dispatch -> result back in the caller
        for _ in range(LATENCY_N):
            sent = time.time()
            started = Stamp.dispatch(sent).send().wait_result(timeout=10)
            lat.append((started - sent) * 1000)
            rtt.append((time.time() - sent) * 1000)
        print(f"latency : dispatch -> handler start over {LATENCY_N:,} sequential jobs: "
              f"p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms, max {max(lat):.3f} ms")
        print(f"          dispatch -> wait_result returns: p50 {pct(rtt, 50):.3f} ms, p99 {pct(rtt, 99):.3f} ms")

        figures = {
            "jobs": N,
            "completed": counts["completed"],
            "failed": counts["failed"],
            "enqueue_s": round(enqueue_s, 3),
            "enqueue_jobs_per_s": round(N / enqueue_s),
            "drain_s": round(drain_s, 3),
            "drain_jobs_per_s": round(N / drain_s),
            "worker_concurrency": CONCURRENCY,
            "latency_jobs": LATENCY_N,
            "latency_p50_ms": round(pct(lat, 50), 3),
            "latency_p99_ms": round(pct(lat, 99), 3),
            "roundtrip_p50_ms": round(pct(rtt, 50), 3),
            "roundtrip_p99_ms": round(pct(rtt, 99), 3),
            "mean_latency_ms": round(statistics.fmean(lat), 3),
        }
        if server is None:
            print(f"(a few small records under prefix {prefix} remain in that store; the results expire within 5 minutes)")
        print(json.dumps(figures))
        return 0 if counts["failed"] == 0 else 1
    finally:
        if worker is not None and thread is not None:
            worker.stop()
            thread.join(30)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
