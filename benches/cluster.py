"""Does sharding queues over Redis primaries add capacity? The same load on one redis-server, on
three separate redis-servers (one queue each: sharding by hand) and on a local Redis Cluster of
three primaries (`redis+cluster://`, tests/redis_cluster.py).

    python benches/cluster.py [--n 100000] [--setups single,shards,cluster] [--json]

Three queues whose names hash to three different primaries of the cluster. Enqueue: three
producer processes at once, one per queue, each `dispatch_many` of n jobs (W1-shaped payloads),
timed from the first producer's start to the last one's end. Drain: three `fastjobs worker`
processes at once, one per queue, sync no-op handlers, timed from 1% to 100% of the jobs done
(W2 of benches/bench.py). Over each window, `INFO cpu` of every node gives how busy each Redis
was and its CPU per job: on a machine with fewer cores than processes the rates cannot scale
(producers, workers and servers share the cores), but the busiest node's CPU per job can: that
node is what caps the rate once cores are plentiful (1 s / its µs per job: the "ceiling" column).
Prints a markdown table; `--json` adds one JSON line. A build that does not take
`redis+cluster://` URLs yet gets the cluster left out, with the reason, and the other two measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "peers"))

import fastjobs  # noqa: E402
from run import Redis, fastjobs_worker  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402

PY = sys.executable
PREFIX = "bench"

# Started before the go line, so that building the payloads and connecting stay out of the timing.
PRODUCER = r"""
import json, sys, time
import fastjobs
url, module, cls, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fastjobs.configure(url, prefix="bench")
job = getattr(__import__(module), cls)
payloads = [{"i": i, "s": "x" * 32} for i in range(n)]
fastjobs.Queue(job.queue).counts()
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
job.dispatch_many(payloads)
print(json.dumps({"t0": t0, "t1": time.monotonic()}), flush=True)
"""


def jobs_module(queues: list[str]) -> str:
    """One no-op job class per queue: Noop0 on queues[0], ..."""
    out = ["import fastjobs\n"]
    for i, q in enumerate(queues):
        out.append(f"class Noop{i}(fastjobs.Job[dict, None]):\n    queue = {q!r}\n    def process(self, p): return None\n")
    return "\n".join(out)


@dataclass
class Setup:
    """Where each queue lives: its URL, and the ports of the Redis nodes whose CPU is read."""

    name: str
    urls: dict[str, str]
    nodes: dict[int, Callable[[], float]]
    notes: list[str] = field(default_factory=list)


def pick_queues(cluster: RedisCluster | None) -> list[str]:
    """Three queue names served by three different primaries (any three without a cluster)."""
    if cluster is None:
        return ["bench-0", "bench-1", "bench-2"]
    by_port: dict[int, str] = {}
    i = 0
    while len(by_port) < 3:
        by_port.setdefault(cluster.port_for_queue(f"bench-{i}"), f"bench-{i}")
        i += 1
    return [by_port[p] for p in sorted(by_port)]


def machine_busy() -> tuple[int, int]:
    """Busy and total jiffies of all cores so far, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)


def cpu_now(setup: Setup) -> dict[int, float]:
    return {port: read() for port, read in setup.nodes.items()}


def node_figures(setup: Setup, c0: dict[int, float], c1: dict[int, float], seconds: float, jobs: int) -> dict[str, Any]:
    per_node = {p: c1[p] - c0[p] for p in c0}
    busiest = max(per_node.values())
    return {"node_cpu_pct": {str(p): round(v / seconds * 100) for p, v in per_node.items()},
            "redis_us_per_job": round(sum(per_node.values()) / jobs * 1e6, 3),
            "busiest_node_us_per_job": round(busiest / jobs * 1e6, 3),
            "ceiling_jobs_per_s": round(jobs / busiest) if busiest > 0 else None}


def enqueue(setup: Setup, tmp: Path, queues: list[str], n: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tmp))
    procs = [subprocess.Popen([PY, "-c", PRODUCER, setup.urls[q], "cluster_jobs", f"Noop{i}", str(n)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i, q in enumerate(queues)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a producer did not start"
    c0, m0 = cpu_now(setup), machine_busy()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"a producer failed on {setup.name}")
        spans.append(json.loads(out.strip().splitlines()[-1]))
    c1, m1 = cpu_now(setup), machine_busy()
    seconds = max(s["t1"] for s in spans) - min(s["t0"] for s in spans)
    jobs = n * len(queues)
    return {"jobs_per_s": round(jobs / seconds), "seconds": round(seconds, 3), **node_figures(setup, c0, c1, seconds, jobs),
            "machine_busy_pct": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100)}


def drain(setup: Setup, tmp: Path, queues: list[str], n: int) -> dict[str, Any]:
    total = n * len(queues)
    counters = []
    for q in queues:
        fastjobs.configure(setup.urls[q], prefix=PREFIX, connection=q)
        counters.append(fastjobs.Queue(q, connection=q))
    workers = [fastjobs_worker(setup.urls[q], PREFIX, tmp, "cluster_jobs", q, 1, python=PY, quiet=True) for q in queues]
    try:
        deadline, t0, c0, m0, done0 = time.monotonic() + 300, 0.0, {}, (0, 0), 0
        while True:
            done = sum(int(c.counts()["completed"]) for c in counters)
            now = time.monotonic()
            if not t0 and done >= total // 100:
                t0, c0, m0, done0 = now, cpu_now(setup), machine_busy(), done
            if done >= total:
                c1, m1 = cpu_now(setup), machine_busy()
                break
            if now > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError(f"the drain on {setup.name} stopped at {done} of {total}")
            time.sleep(0.01)
        seconds, jobs = now - t0, total - done0
        return {"jobs_per_s": round(jobs / seconds), "seconds": round(seconds, 3), **node_figures(setup, c0, c1, seconds, jobs),
                "machine_busy_pct": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100)}
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)


def cluster_unsupported(url: str, queue: str) -> str | None:
    """Why this build cannot use the cluster URL, or None if it can."""
    try:
        fastjobs.configure(url, prefix=PREFIX, connection="probe")
        fastjobs.Queue(queue, connection="probe").counts()
    except Exception as e:  # noqa: BLE001 - any failure means: leave the cluster out, say why
        line = str(e).splitlines()[0]
        return f"{type(e).__name__}: {line if len(line) <= 80 else line[:80].rsplit(' ', 1)[0] + ' ...'}"
    return None


def fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def table(figures: dict[str, Any], setups: list[str]) -> str:
    rows = ["| setup | phase | jobs/s | vs single | Redis CPU per job, all nodes | busiest node per job | ceiling | CPU per node | machine busy |",
            "|---|---|---|---|---|---|---|---|---|"]
    for phase in ("enqueue", "drain"):
        base = figures.get("single", {}).get(phase, {}).get("jobs_per_s")
        for name in setups:
            f = figures.get(name, {}).get(phase)
            if f is None:
                continue
            ratio = f"{f['jobs_per_s'] / base:.2f}" if base else "—"
            nodes = " / ".join(f"{v}%" for v in f["node_cpu_pct"].values())
            rows.append(f"| {name} | {phase} | {fmt_rate(f['jobs_per_s'])} | {ratio} | {f['redis_us_per_job']:.2f} µs | "
                        f"{f['busiest_node_us_per_job']:.2f} µs | {fmt_rate(f['ceiling_jobs_per_s'])} | {nodes} | {f['machine_busy_pct']}% |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="jobs per queue (3 queues)")
    ap.add_argument("--setups", default="single,shards,cluster", help="comma-separated: single, shards, cluster")
    ap.add_argument("--json", action="store_true", help="also print every figure as one JSON line")
    args = ap.parse_args()
    wanted = [s for s in args.setups.split(",") if s]
    if not set(wanted) <= {"single", "shards", "cluster"}:
        ap.error("--setups takes single, shards and cluster")
    tmp = Path(tempfile.mkdtemp(prefix="fastjobs-bench-"))
    cluster = RedisCluster(primaries=3) if "cluster" in wanted else None
    servers: list[Redis] = []
    figures: dict[str, Any] = {"cores": os.cpu_count(), "n_per_queue": args.n}
    try:
        queues = pick_queues(cluster)
        figures["queues"] = queues
        (tmp / "cluster_jobs.py").write_text(jobs_module(queues))
        setups: list[Setup] = []
        if "single" in wanted:
            one = Redis()
            servers.append(one)
            setups.append(Setup("single", dict.fromkeys(queues, one.url), {one.port: one.cpu_seconds}))
        if "shards" in wanted:
            three = [Redis() for _ in queues]
            servers += three
            setups.append(Setup("shards", {q: s.url for q, s in zip(queues, three)}, {s.port: s.cpu_seconds for s in three}))
        if cluster is not None:
            c = cluster

            def reader(port: int) -> Callable[[], float]:
                def cpu() -> float:
                    i = c.info(port, "cpu")
                    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])

                return cpu

            why = cluster_unsupported(c.url, queues[0])
            if why is None:
                setups.append(Setup("cluster", dict.fromkeys(queues, c.url), {p: reader(p) for p in c.primaries()}))
            else:
                figures["cluster"] = {"skipped": why}
                print(f"cluster: left out, this build does not take {c.url.split('//')[0]}// URLs ({why})", file=sys.stderr)
        for s in setups:
            figures[s.name] = {"enqueue": enqueue(s, tmp, queues, args.n)}
            print(f"{s.name:8} enqueue {figures[s.name]['enqueue']['jobs_per_s']:>10,} jobs/s", file=sys.stderr)
            figures[s.name]["drain"] = drain(s, tmp, queues, args.n)
            print(f"{s.name:8} drain   {figures[s.name]['drain']['jobs_per_s']:>10,} jobs/s", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    names = [s for s in wanted if "enqueue" in figures.get(s, {})]
    print(f"\n{len(queues)} queues of {args.n:,} jobs, one producer and one worker process per queue, {os.cpu_count()} cores\n")
    print(table(figures, names))
    print("\nsingle: one redis-server for the 3 queues; shards: 3 redis-servers, one queue each (sharding by hand); "
          "cluster: 3 primaries of a Redis Cluster, the queues on different ones. CPU per job: Redis's user + sys CPU "
          "(INFO cpu) over the window, per job of the 3 queues.")
    for phase in ("enqueue", "drain"):
        base = figures.get("single", {}).get(phase)
        for name in names:
            f = figures[name][phase]
            if name == "single" or base is None or not f["busiest_node_us_per_job"]:
                continue
            print(f"{name} {phase}: {f['jobs_per_s'] / base['jobs_per_s']:.2f}x the single Redis's rate; its busiest node spends "
                  f"{f['busiest_node_us_per_job'] / base['busiest_node_us_per_job']:.2f}x the single Redis's CPU per job, "
                  f"all nodes together {f['redis_us_per_job'] / base['redis_us_per_job']:.2f}x")
    print(f"\nEvery process (producers or workers, and every Redis) shares {os.cpu_count()} cores: more Redis processes cannot "
          "raise the rates much here. What sharding buys shows in the busiest node's CPU per job, and the ceiling it gives "
          "once each Redis has a core of its own.")
    if "skipped" in figures.get("cluster", {}):
        print(f"\ncluster: not measured, this build does not take redis+cluster:// URLs ({figures['cluster']['skipped']}); "
              "the shards setup is the same split by hand.")
    if args.json:
        print(json.dumps(figures))
    return 0 if names else 1


if __name__ == "__main__":
    sys.exit(main())
