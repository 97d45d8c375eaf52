"""The ``fastjobs`` command: ``fastjobs worker MODULE... --queue Q --concurrency N``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

from . import __version__, config

__all__ = ["main"]


def _worker(args: argparse.Namespace) -> int:
    from .worker import Worker

    if args.url:
        config.configure(args.url, prefix=args.prefix)
    elif args.prefix:
        config.configure(prefix=args.prefix)
    sys.path.insert(0, os.getcwd())
    for name in args.modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            print(f"fastjobs: cannot import {name!r}: {e}", file=sys.stderr)
            return 2
    w = Worker(
        args.queue or ["default"],
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        lease=args.lease,
        grace=args.grace,
        scheduler=not args.no_scheduler,
    )
    if not w.jobs:
        print(f"fastjobs: the modules {args.modules} register no job", file=sys.stderr)
        return 2
    s = w.run()
    print(
        f"fastjobs worker: {s.completed} completed, {s.retried} retried, {s.failed} failed, "
        f"{s.handed_back} handed back in {s.seconds:.1f}s",
        file=sys.stderr,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastjobs", description="fastjobs: background jobs with a Rust engine on Redis")
    p.add_argument("--version", action="version", version=f"fastjobs {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run jobs from queues", description="Run the jobs the MODULES register.")
    w.add_argument("modules", nargs="+", metavar="MODULE", help="modules that define the jobs (imported, e.g. myapp.jobs)")
    w.add_argument("-q", "--queue", action="append", help="queue to consume; repeat for several, highest priority first (default: default)")
    w.add_argument("-c", "--concurrency", type=int, default=1, help="handler threads / concurrent async jobs (default 1)")
    w.add_argument("--prefetch", type=int, default=None, help="jobs kept reserved ahead of the handlers (default: adaptive, ~20 ms of work, at most max(1000, 4 x concurrency))")
    w.add_argument("--lease", type=float, default=30.0, help="seconds a reserved job stays leased without a heartbeat (default 30)")
    w.add_argument("--grace", type=float, default=30.0, help="seconds a graceful stop waits for running jobs (default 30)")
    w.add_argument("--url", default=None, help="Redis URL (default: $FASTJOBS_URL or redis://127.0.0.1:6379/0)")
    w.add_argument("--prefix", default=None, help="key prefix (default: $FASTJOBS_PREFIX or fj)")
    w.add_argument("--no-scheduler", action="store_true", help="do not promote delayed jobs or reap leases in this process")
    w.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    w.set_defaults(func=_worker)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
