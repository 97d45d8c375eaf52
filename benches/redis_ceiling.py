"""Redis's own cost of a bulk enqueue, with no producer work: the ceiling of W1.

    python benches/redis_ceiling.py [--n 1000000]

On a throwaway redis-server, one raw socket sends a prebuilt buffer of RPUSH commands (4,000
elements each) and reads the replies; `INFO cpu` before and after gives Redis's CPU per
element. Elements of 95 bytes are a W1 record; 40 bytes is under Redis's 44-byte limit for
one-allocation strings; 1,550 bytes would be 16 W1 records per element. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from run import Redis


def blast(redis: Redis, n: int, size: int, per: int = 4000) -> dict[str, float]:
    arg = b"$%d\r\n%s\r\n" % (size, b"x" * size)
    per = min(per, n)
    command = b"*%d\r\n$5\r\nRPUSH\r\n$4\r\nlist\r\n" % (per + 2) + arg * per
    buf, replies = command * (n // per), n // per
    best: dict[str, float] = {}
    for _ in range(3):
        redis.command("DEL", "list")
        with socket.create_connection(("127.0.0.1", redis.port)) as s:
            c0, t0 = redis.cpu_seconds(), time.perf_counter()
            s.sendall(buf)
            got = b""
            while got.count(b"\r\n") < replies:
                got += s.recv(1 << 20)
            seconds, redis_cpu = time.perf_counter() - t0, redis.cpu_seconds() - c0
        run = {"elements_per_s": replies * per / seconds, "redis_us_per_element": redis_cpu / (replies * per) * 1e6}
        if not best or run["elements_per_s"] > best["elements_per_s"]:
            best = run
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="elements of 95 and 40 bytes")
    args = ap.parse_args()
    redis = Redis()
    figures: dict[str, object] = {"redis": redis.version()}
    try:
        for size, n in ((95, args.n), (40, args.n), (1550, args.n // 16)):
            r = blast(redis, n, size, 4000 if size < 1000 else 250)
            figures[f"{size}B"] = r
            print(f"{size:>5} B elements: {r['elements_per_s']:>12,.0f}/s, Redis {r['redis_us_per_element']:.3f} us of CPU each", file=sys.stderr)
    finally:
        redis.stop()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
