"""Micro-benchmarks (pytest-benchmark) of the producer's hot calls, on a throwaway Redis:

    make bench-micro

They measure; they assert nothing about speed (the figures go to benches/RESULTS.md).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastjobs
from tests.conftest import RedisServer

PAYLOAD = {"i": 1, "s": "x" * 32}


class MicroNoop(fastjobs.Job[dict, None]):
    queue = "micro"

    def process(self, payload: dict) -> None:
        return None


@pytest.fixture(scope="module", autouse=True)
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    fastjobs.configure(server.url, prefix="micro")
    yield server
    server.stop()


def test_dispatch_one(benchmark: Any) -> None:
    benchmark(lambda: MicroNoop.dispatch(PAYLOAD).send())


def test_dispatch_many_10k(benchmark: Any) -> None:
    payloads = [dict(PAYLOAD, i=i) for i in range(10_000)]
    benchmark(lambda: MicroNoop.dispatch_many(payloads))


def test_status(benchmark: Any) -> None:
    h = MicroNoop.dispatch(PAYLOAD).send()
    benchmark(h.status)


def test_queue_counts(benchmark: Any) -> None:
    q = fastjobs.Queue("micro")
    benchmark(q.counts)
