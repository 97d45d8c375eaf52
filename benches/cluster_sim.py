"""How far sharding queues over Redis Cluster primaries can take fastjobs: a model, no servers.

    python benches/cluster_sim.py [--enqueue-us E --reserve-us R --ack-us A] [--workers 100 --worker-rate 10000]
                                  [--queues 10] [--hot 0.5] [--shards 1,3,6,10]
    python benches/cluster_sim.py --measure [URL] [--n 100000]

One Redis runs on one core: with c µs of its CPU per job (enqueue + reserve + ack), it saturates
at 1,000,000 / c jobs/s. A queue lives on one shard (its keys share the hash tag {queue}), so
with k shards the busiest shard carries the largest sum of its queues' shares of the load, and
the cluster saturates at 1,000,000 / (c * that share): 10 equally loaded queues over k shards
give ceil(10 / k) / 10 at best; one hot queue taking half the jobs holds every k at twice one Redis.
Two placements: the best one (each queue to the least loaded shard), and the one Redis gives
queues named q0..q9 (CRC16 of the hash tag, slots split as `redis-cli --cluster create` does).
The workers bound it too: --workers times --worker-rate jobs/s (any worker takes any queue's jobs).

--measure refreshes the per-job costs: on URL (a Redis of its own is best: the figures are the
whole server's CPU, and the slow log is used and reset) or on a throwaway redis-server, fastjobs
dispatches n jobs in bulk and one worker process drains them; `INFO cpu` deltas give the server's
CPU per job of each phase, and the slow log (every command, with its execution time) splits the
drain's between the reserve and ack scripts.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "peers"))

from tests.resp import Redis as Resp  # noqa: E402

# µs of Redis CPU per job: medians of three `--measure` runs (100,000 jobs), 2026-12-07, on the
# 2-core bench machine shared with other work (Redis 7.0.15, W1-shaped no-op jobs, one sync worker
# taking them in large batches; 100 workers each taking small batches pay more per job for reserve).
ENQUEUE_US, RESERVE_US, ACK_US = 0.25, 3.6, 0.78
SLOTS = 16384


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, Redis Cluster's key hash."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of_queue(queue: str) -> int:
    """Every key of a queue is `<prefix>:{<queue>}:...`: its slot is the one of `{<queue>}`, the
    hash tag being what lies between the first { and the next } (when not empty)."""
    key = "{" + queue + "}"
    end = key.find("}", 1)
    return crc16((key[1:end] if end > 1 else key).encode()) % SLOTS


def slot_ranges(k: int) -> list[int]:
    """The last slot of each of k primaries, as `redis-cli --cluster create` splits them."""
    per, cursor, first, lasts = SLOTS / k, 0.0, 0, []
    for j in range(k):
        last = SLOTS - 1 if j == k - 1 else max(first, math.floor(cursor + per - 1 + 0.5))
        lasts.append(last)
        first, cursor = last + 1, cursor + per
    return lasts


def hashed_max_share(names: list[str], shares: list[float], k: int) -> float:
    lasts, load = slot_ranges(k), [0.0] * k
    for name, share in zip(names, shares):
        slot = slot_of_queue(name)
        load[next(i for i, last in enumerate(lasts) if slot <= last)] += share
    return max(load)


def best_max_share(shares: list[float], k: int) -> float:
    """Largest queue first to the least loaded shard: the best placement for equal shares,
    within 4/3 of it otherwise (LPT)."""
    load = [0.0] * k
    for s in sorted(shares, reverse=True):
        load[load.index(min(load))] += s
    return max(load)


def model(args: argparse.Namespace) -> dict[str, Any]:
    per_job = args.enqueue_us + args.reserve_us + args.ack_us
    one = 1e6 / per_job
    workers = args.workers * args.worker_rate
    names = [f"q{i}" for i in range(args.queues)]
    even = [1 / args.queues] * args.queues
    hot = [args.hot] + [(1 - args.hot) / (args.queues - 1)] * (args.queues - 1)
    rows = []
    for k in args.shards:
        row: dict[str, Any] = {"shards": k}
        for label, shares in (("even", even), ("hot", hot)):
            for placement, share in (("best", best_max_share(shares, k)), ("hashed", hashed_max_share(names, shares, k))):
                ceiling = one / share
                row[f"{label}_{placement}"] = {"max_share": round(share, 3), "redis_ceiling": round(ceiling),
                                               "jobs_per_s": round(min(ceiling, workers))}
        rows.append(row)
    return {"redis_us_per_job": round(per_job, 3), "one_redis_jobs_per_s": round(one), "workers_jobs_per_s": workers, "rows": rows}


def rate(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def print_model(args: argparse.Namespace, m: dict[str, Any]) -> None:
    print(f"Redis CPU per job: enqueue {args.enqueue_us} + reserve {args.reserve_us} + ack {args.ack_us} = {m['redis_us_per_job']} µs: "
          f"one Redis saturates at {rate(m['one_redis_jobs_per_s'])} jobs/s (one core).")
    print(f"{args.workers} workers at {args.worker_rate:,} jobs/s each: at most {rate(m['workers_jobs_per_s'])} jobs/s. "
          f"{args.queues} queues; hot: q0 takes {args.hot:.0%} of the jobs.\n")
    print("| shards | load | placement | busiest shard's share | Redis ceiling, jobs/s | vs one Redis | jobs/s, workers' bound too |")
    print("|---|---|---|---|---|---|---|")
    for r in m["rows"]:
        kinds = (("even_best", "even", "best"), ("even_hashed", "even", "q0..q9 hashed"),
                 ("hot_best", f"q0 {args.hot:.0%}", "best"), ("hot_hashed", f"q0 {args.hot:.0%}", "q0..q9 hashed"))
        for key, load, placement in kinds[:1] if r["shards"] == 1 else kinds:
            f = r[key]
            one = r["shards"] == 1
            print(f"| {r['shards']} | {'any' if one else load} | {'-' if one else placement} | {f['max_share']:.0%} | {rate(f['redis_ceiling'])} "
                  f"| {f['redis_ceiling'] / m['one_redis_jobs_per_s']:.2f} | {rate(f['jobs_per_s'])} |")
    print("\njobs/s = min(Redis ceiling, workers). A queue cannot be split over shards: the hot queue's shard caps the cluster "
          "at 1 / its share of one Redis, however many shards. The best placement needs queue names chosen for their slots "
          "(CLUSTER KEYSLOT {name}) or slots moved (redis-cli --cluster reshard); names as they come land as the hashed rows say.")


# --measure: fastjobs against a real Redis.

JOBS = """
import fastjobs

class SimNoop(fastjobs.Job[dict, None]):
    queue = "sim"
    def process(self, p): return None
"""


class Conn(Resp):
    """One connection for the whole measurement (tests/resp.py's opens one per command), with
    the URL's password and database."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        if u.scheme != "redis":
            raise SystemExit("--measure takes a redis:// URL")
        super().__init__(u.port or 6379, u.hostname or "127.0.0.1")
        self.sock = socket.create_connection(self.addr, timeout=60)
        self.file = self.sock.makefile("rb")
        if u.password is not None:
            self.command("AUTH", *([unquote(u.username)] if u.username else []), unquote(u.password))
        if u.path.strip("/"):
            self.command("SELECT", u.path.strip("/"))

    def command(self, *args: Any) -> Any:
        self.sock.sendall(self._encode(args))
        return self._read(self.file)

    def cpu_seconds(self) -> float:
        info = self.command("INFO", "cpu").decode()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def slowlog_us(r: Conn) -> dict[str, float]:
    """The slow log's µs by what fastjobs ran, its scripts told apart by their keys. Left out: the
    commands scripts call (peer "?:0": their time is their script's) and this measurement's own."""
    out: dict[str, float] = {}
    for _, _, us, argv, peer, *_ in r.command("SLOWLOG", "GET", "-1"):
        name = argv[0].decode(errors="replace").lower()
        if peer == b"?:0" or name in ("slowlog", "info", "config"):
            continue
        if name == "evalsha" and len(argv) > 3:
            keys, first = int(argv[2]), argv[3].decode(errors="replace")
            # reserve.lua: KEYS[1] the wait list, 7 keys; ack.lua: KEYS[1] the lease hash, 11 keys;
            # counts.lua (the progress polls here): KEYS[1] the delayed zset, 4 keys.
            suffix = "lease" if ":lease:" in first else first.rsplit(":", 1)[-1]
            name = {(7, "wait"): "reserve", (11, "lease"): "ack", (4, "delayed"): "counts"}.get((keys, suffix), f"script({keys} keys)")
        out[name] = out.get(name, 0.0) + us
    out.pop("counts", None)
    return out


def dispatch_and_drain(r: Conn, url: str, tmp: Path, n: int, log: bool) -> dict[str, Any]:
    """Server CPU per job of a bulk dispatch of n jobs and of one worker draining them (from 1%
    done to the end, as W2 of benches/bench.py); with ``log``, the slow log of each phase too."""
    from sim_jobs import SimNoop  # type: ignore[import-not-found]

    import fastjobs
    from run import fastjobs_worker

    prefix = f"sim{uuid.uuid4().hex[:8]}"
    fastjobs.configure(url, prefix=prefix)
    queue = fastjobs.Queue("sim")
    queue.counts()
    payloads = [{"i": i, "s": "x" * 32} for i in range(n)]
    r.command("CONFIG", "SET", "slowlog-log-slower-than", "0" if log else "-1")
    r.command("SLOWLOG", "RESET")
    c0 = r.cpu_seconds()
    SimNoop.dispatch_many(payloads)
    out: dict[str, Any] = {"enqueue_us": (r.cpu_seconds() - c0) / n * 1e6, "enqueue_log": slowlog_us(r)}
    worker = fastjobs_worker(url, prefix, tmp, "sim_jobs", "sim", 1, quiet=True)
    try:
        deadline, done0, c1 = time.monotonic() + 120, 0, 0.0
        while (done := int(queue.counts()["completed"])) < n:
            if not c1 and done >= n // 100:
                done0, c1 = done, r.cpu_seconds()
                r.command("SLOWLOG", "RESET")
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the drain stopped at {done} of {n}")
            time.sleep(0.05)
        out["drain_us"] = (r.cpu_seconds() - c1) / (n - done0) * 1e6
        out["drain_log"] = {k: v / (n - done0) for k, v in slowlog_us(r).items()}
    finally:
        worker.terminate()
        worker.wait(30)
        r.command("CONFIG", "SET", "slowlog-log-slower-than", "-1")
        cursor = b"0"
        while True:
            cursor, keys = r.command("SCAN", cursor, "MATCH", f"{prefix}:*", "COUNT", 1000)
            if keys:
                r.command("DEL", *keys)
            if cursor == b"0":
                break
    return out


def measure(url: str | None, n: int) -> dict[str, Any]:
    """Two runs: the CPU per job from one with the slow log off (logging every command costs
    Redis CPU too), the split of the drain's between reserve and ack from one with it on. The
    slow log's times are wall-clock: on a busy machine they hold some time Redis waited for a core."""
    from run import Redis

    server = Redis() if url is None else None
    url = server.url if server is not None else url
    assert url is not None
    r = Conn(url)
    tmp = Path(tempfile.mkdtemp(prefix="fastjobs-sim-"))
    saved = r.command("CONFIG", "GET", "slowlog-*")
    try:
        r.command("CONFIG", "SET", "slowlog-max-len", "1000000")
        (tmp / "sim_jobs.py").write_text(JOBS)
        sys.path.insert(0, str(tmp))
        cpu = dispatch_and_drain(r, url, tmp, n, log=False)
        logged = dispatch_and_drain(r, url, tmp, n, log=True)["drain_log"]
        total = sum(logged.values())
        split = {k: cpu["drain_us"] * v / total for k, v in logged.items()} if total else {}
        reserve, ack = split.get("reserve", 0.0), split.get("ack", 0.0)
        return {"url": url if server is None else "a throwaway redis-server", "n": n, "enqueue_us": round(cpu["enqueue_us"], 3),
                "drain_us": round(cpu["drain_us"], 3), "reserve_us": round(reserve, 3), "ack_us": round(ack, 3),
                "other_us": round(cpu["drain_us"] - reserve - ack, 3),
                "slowlog_drain_us": {k: round(v, 3) for k, v in sorted(logged.items(), key=lambda kv: -kv[1])}}
    finally:
        r.command("CONFIG", "SET", *saved)
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--enqueue-us", type=float, default=ENQUEUE_US, help="Redis CPU per job of a bulk dispatch, µs")
    ap.add_argument("--reserve-us", type=float, default=RESERVE_US, help="Redis CPU per job of reserving it, µs")
    ap.add_argument("--ack-us", type=float, default=ACK_US, help="Redis CPU per job of settling it, µs")
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--worker-rate", type=int, default=10_000, help="jobs/s one worker runs (10,000: handlers of 0.1 ms)")
    ap.add_argument("--queues", type=int, default=10)
    ap.add_argument("--hot", type=float, default=0.5, help="the hot queue's share of the jobs in the skewed load")
    ap.add_argument("--shards", default="1,3,6,10", help="comma-separated shard counts")
    ap.add_argument("--measure", nargs="?", const="", metavar="URL", help="measure the per-job costs (on a throwaway redis-server without URL)")
    ap.add_argument("--n", type=int, default=100_000, help="jobs --measure dispatches and drains")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args()
    if args.measure is not None:
        m = measure(args.measure or None, args.n)
        print(f"{m['n']:,} jobs on {m['url']}: Redis CPU per job: enqueue {m['enqueue_us']} µs, drain {m['drain_us']} µs "
              f"(reserve {m['reserve_us']}, ack {m['ack_us']}, the rest {m['other_us']}: the worker's other commands)")
        print(f"slow log of the drain, µs per job (wall-clock): {m['slowlog_drain_us']}")
        print(f"model with them: python benches/cluster_sim.py --enqueue-us {m['enqueue_us']} --reserve-us {m['reserve_us']} "
              f"--ack-us {m['ack_us']}")
        if args.json:
            print(json.dumps(m))
        return 0
    args.shards = [int(k) for k in args.shards.split(",")]
    if args.queues < 2 or not 0 < args.hot < 1 or min(args.shards) < 1:
        ap.error("--queues takes 2 or more, --hot a share between 0 and 1, --shards counts of 1 or more")
    m = model(args)
    print_model(args, m)
    if args.json:
        print(json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
