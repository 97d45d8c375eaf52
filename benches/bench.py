"""fastjobs against the bench targets, at full size, on a throwaway redis-server.

    python benches/bench.py [--quick]
    python benches/bench.py --store memory|sqlite|postgres [--quick]   (benches/stores.py)

W1 bulk enqueue of 1,000,000 jobs from a list; peak RSS of a producer dispatching 10,000,000
jobs from a generator; W2 one worker process draining 1,000,000 no-op jobs (sync and async
handlers); W3/W4/W5 through the same adapter as the peer comparison; W5+ the lateness of
10,000 jobs due over 10 s among 100,000 far-future ones (lateness.py). Ends with one JSON line.
``--store`` runs the same workloads on another store (stores.py says what changes there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

from run import Redis, fastjobs_worker, run_one  # noqa: E402

PY = sys.executable

PRODUCER = r"""
import json, resource, sys, time
import fastjobs
fastjobs.configure(sys.argv[1], prefix="bench")
class BenchNoop(fastjobs.Job[dict, None]):
    queue = "bench"
    def process(self, p): return None
n, mode = int(sys.argv[2]), sys.argv[3]
if mode == "list":
    payloads = [{"i": i, "s": "x" * 32} for i in range(n)]
    t0 = time.perf_counter()
    BenchNoop.dispatch_many(payloads)
else:
    t0 = time.perf_counter()
    BenchNoop.dispatch_many({"i": i, "s": "x" * 32} for i in range(n))
el = time.perf_counter() - t0
print(json.dumps({"n": n, "seconds": el, "jobs_per_s": n / el,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# One module per handler kind: a worker whose jobs are all async pulls on its event loop.
JOBS = {
    "sync": """
import fastjobs

class BenchNoop(fastjobs.Job[dict, None]):
    queue = "bench"
    def process(self, p): return None
""",
    "async": """
import fastjobs

class BenchNoop(fastjobs.Job[dict, None]):
    queue = "bench"
    async def process(self, p): return None
""",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def producer(url: str, n: int, mode: str) -> dict[str, Any]:
    out = subprocess.run([PY, "-c", PRODUCER, url, str(n), mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def process_cpu_s(pid: int) -> float:
    """CPU seconds a process has used (user + system, all threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def drain(redis: Redis, n: int, handler: str, tmp: Path, limits: dict[str, Any] | None = None, events: bool = False,
          callback: str | None = None, received: Path | None = None) -> dict[str, Any]:
    """Enqueue n jobs, start one worker process, time the drain from 1% to 100%. Also gives
    the CPU each side spent per job over that window (Redis, and the worker process), which
    says where the limit of one worker is on a 2-core machine. ``limits``: set on the queue
    first (``Queue.set_limits``), to measure what checking them costs; ``events``: the
    queue's events on (``Queue.set_events``) from before the enqueue, for what they cost;
    ``callback``: a URL every job posts its outcome to (signed), ``received`` the receiver's
    count file: the drain then also gives when the last callback arrived."""
    import fastjobs

    fastjobs.configure(redis.url, prefix="bench")
    if events:
        fastjobs.Queue("bench").set_events(True)
    module = f"bench_jobs_{handler}"
    (tmp / f"{module}.py").write_text(JOBS[handler])
    # Enqueue by name: the producer needs no handler (same payloads as the peers).
    options = fastjobs.serde.dumps({"callback": {"url": callback}}) if callback else None
    writer = fastjobs.config.client().bulk_writer("bench", "BenchNoop", attempts=1, priority=0, options=options)
    payloads = [{"i": i, "s": "x" * 32} for i in range(n)]
    for k in range(0, n, 10_000):
        writer.stage_payloads(payloads, k, k + 10_000, k, fastjobs.serde.dumps)
        writer.send()
    writer.send(wait_all=True)
    q = fastjobs.Queue("bench")
    if limits:
        q.set_limits(**limits)
    extra = ("--callback-secret", "bench-secret") if callback else ()
    worker = fastjobs_worker(redis.url, "bench", tmp, module, "bench", 1 if handler == "sync" else 64, python=PY, quiet=True, extra=extra)
    try:
        t0 = c0 = None
        deadline = time.monotonic() + 300
        while True:
            c = q.counts()["completed"]
            now = time.perf_counter()
            if t0 is None and c >= n // 100:
                t0, c0 = now, c
                cpu0 = (redis.cpu_seconds(), process_cpu_s(worker.pid))
            if c >= n:
                cpu1 = (redis.cpu_seconds(), process_cpu_s(worker.pid))
                break
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"drain stopped at {c} of {n}")
            time.sleep(0.005)
        assert t0 is not None and c0 is not None
        jobs = n - c0
        delivered = {}
        if received is not None:
            while int(received.read_text() or 0) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{received.read_text()} of {n} callbacks arrived")
                time.sleep(0.005)
            el = time.perf_counter() - t0
            delivered = {"callbacks_per_s": jobs / el, "callbacks_seconds": el}
        return {**delivered, "n": n, "handler": handler, "seconds": now - t0, "jobs_per_s": jobs / (now - t0),
                "redis_us_per_job": round((cpu1[0] - cpu0[0]) / jobs * 1e6, 3),
                "worker_us_per_job": round((cpu1[1] - cpu0[1]) / jobs * 1e6, 3)}
    finally:
        worker.terminate()
        worker.wait(30)
        redis.command("FLUSHALL")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    ap.add_argument("--only", default="W1,W2,W3,W4,W5", help="comma-separated workloads to run (W1 includes the 10M generator)")
    ap.add_argument("--events", action="store_true",
                    help="W1 and W2 (sync) also with the queue's events on: what writing them costs")
    ap.add_argument("--callbacks", action="store_true",
                    help="W2 (sync, 100,000 jobs) with and without a signed callback per job to a local receiver")
    ap.add_argument("--limited", action="store_true",
                    help="W2 (sync) also with a rate limit and a concurrency limit set high enough never to bind: what checking them costs")
    ap.add_argument("--store", default="redis", choices=["redis", "memory", "sqlite", "postgres"],
                    help="the store to measure (default redis; the others: benches/stores.py)")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    only = set(args.only.upper().split(","))
    if args.store != "redis":
        if args.events or args.callbacks or args.limited:
            ap.error("--events, --callbacks and --limited measure Redis only")
        import stores

        return stores.main(args.store, args.quick, only)
    redis = Redis()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="fastjobs-bench-"))
    figures: dict[str, Any] = {"redis": redis.version(), "cores": os.cpu_count()}
    try:
        if "W1" in only:
            figures["W1_list"] = producer(redis.url, 1_000_000 // scale, "list")
            redis.command("FLUSHALL")
            print(f"W1  1M from a list      {figures['W1_list']['jobs_per_s']:>12,.0f} jobs/s", file=sys.stderr)
            figures["generator_10M"] = producer(redis.url, 10_000_000 // scale, "generator")
            redis.command("FLUSHALL")
            g = figures["generator_10M"]
            print(f"    10M from a generator {g['jobs_per_s']:>12,.0f} jobs/s, peak RSS {g['peak_rss_mb']:.0f} MB", file=sys.stderr)
        if args.events and "W1" in only:
            import fastjobs

            fastjobs.configure(redis.url, prefix="bench")
            fastjobs.Queue("bench").set_events(True)
            figures["W1_list_events"] = producer(redis.url, 1_000_000 // scale, "list")
            redis.command("FLUSHALL")
            print(f"W1  1M from a list, events on {figures['W1_list_events']['jobs_per_s']:>12,.0f} jobs/s", file=sys.stderr)
        for handler in ("sync", "async") if "W2" in only else ():
            figures[f"W2_{handler}"] = d = drain(redis, 1_000_000 // scale, handler, tmp)
            print(f"W2  drain, {handler} no-op     {d['jobs_per_s']:>12,.0f} jobs/s "
                  f"(CPU per job: Redis {d['redis_us_per_job']} µs, worker {d['worker_us_per_job']} µs)", file=sys.stderr)
        if args.events and "W2" in only:
            figures["W2_sync_events"] = d = drain(redis, 1_000_000 // scale, "sync", tmp, events=True)
            print(f"W2  drain, sync, events on {d['jobs_per_s']:>12,.0f} jobs/s "
                  f"(CPU per job: Redis {d['redis_us_per_job']} µs, worker {d['worker_us_per_job']} µs)", file=sys.stderr)
        if args.callbacks and "W2" in only:
            n_cb = 100_000 // scale
            figures["W2_sync_100k"] = d = drain(redis, n_cb, "sync", tmp)
            print(f"W2  drain, sync, {n_cb:,} jobs {d['jobs_per_s']:>12,.0f} jobs/s", file=sys.stderr)
            port, count = free_port(), tmp / "received"
            count.write_text("0")
            receiver = subprocess.Popen([PY, str(HERE / "receiver.py"), str(port), str(count)])
            try:
                time.sleep(0.5)
                figures["W2_sync_100k_callbacks"] = d = drain(redis, n_cb, "sync", tmp, callback=f"http://127.0.0.1:{port}/cb",
                                                              received=count)
            finally:
                receiver.terminate()
                receiver.wait(10)
            print(f"W2  drain, sync, a callback per job {d['jobs_per_s']:>12,.0f} jobs/s "
                  f"(all {n_cb:,} callbacks in {d['callbacks_seconds']:.2f} s: {d['callbacks_per_s']:,.0f}/s)", file=sys.stderr)
        if args.limited:
            for name, limits in (("rate", {"rate": 10**9, "per": 1}), ("concurrency", {"concurrency": 10**6})):
                figures[f"W2_sync_{name}_limit"] = d = drain(redis, 1_000_000 // scale, "sync", tmp, limits)
                print(f"W2  drain, sync, {name} limit set {d['jobs_per_s']:>12,.0f} jobs/s "
                      f"(CPU per job: Redis {d['redis_us_per_job']} µs)", file=sys.stderr)
        for w, key in (("W3", "p50_ms"), ("W4", "bytes_per_job"), ("W5", "p50_ms")):
            if w not in only:
                continue
            redis.command("FLUSHALL")
            r = run_one(Path(PY), "fastjobs", w, redis.url, 100_000 // scale if w == "W4" else None, 120)
            figures[w] = r
            extra = f", p99 {r.get('p99_ms')}" if "p99_ms" in r else ""
            print(f"{w}  {key:<20} {r.get(key, r.get('error'))}{extra}", file=sys.stderr)
    finally:
        redis.stop()
    if "W5" not in only:
        print(json.dumps(figures))
        return 0
    late = subprocess.run([PY, str(HERE / "lateness.py"), "--jobs", str(10_000 // scale), "--background", str(100_000 // scale)],
                          capture_output=True, text=True)
    if late.returncode == 0:
        figures["W5_spread"] = w5 = json.loads(late.stdout.strip().splitlines()[-1])
        print(f"W5+ lateness of {w5['jobs']:,} jobs over {w5['spread_s']:g}s, {w5['background_delayed']:,} far-future: "
              f"p50 {w5['p50_ms']} ms, p99 {w5['p99_ms']} ms", file=sys.stderr)
    else:
        figures["W5_spread"] = {"error": late.stderr.strip().splitlines()[-1:]}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
