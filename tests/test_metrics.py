"""Prometheus metrics: a worker's (and a pool's) /metrics endpoint scraped after real jobs
ran, and ``fastjobs.metrics.render`` for a set of queues."""

from __future__ import annotations

import http.client
import re
import socket
from typing import Any

import pytest

import fastjobs
from fastjobs import metrics
from tests.apps.metric_jobs import MeteredAsyncTick, MeteredBoom, MeteredFlaky, MeteredTick
from tests.conftest import eventually

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a Prometheus text exposition, by name and label set; checks the
    comment lines name a type for every family."""
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, _, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE line"
        samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def value(samples: dict[Any, float], metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    """Status, content type and body of a GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> str:
    status, kind, body = get(port)
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    return body


def scraped(port: int) -> dict[Any, float] | None:
    try:
        return parse(scrape(port))
    except OSError:
        return None


def run_jobs() -> None:
    for i in range(5):
        MeteredTick.dispatch(i).send()
    MeteredBoom.dispatch(0).send()
    MeteredFlaky.dispatch(0).send()
    MeteredAsyncTick.dispatch(0).send()


def check_worker_metrics(port: int) -> dict[Any, float]:
    def done() -> dict[Any, float] | None:
        s = scraped(port)
        if s is None or value(s, "fastjobs_jobs_total", queue="metered", name="MeteredFlaky", outcome="completed") < 1:
            return None
        if value(s, "fastjobs_queue_outcomes_total", queue="metered", outcome="completed") < 7:
            return None  # the queue sample comes every few seconds
        return s

    s = eventually(done, timeout=30)
    jobs = {(n, o): value(s, "fastjobs_jobs_total", queue="metered", name=n, outcome=o)
            for n in ("MeteredTick", "MeteredBoom", "MeteredFlaky", "MeteredAsyncTick") for o in metrics.OUTCOMES}
    assert jobs == {("MeteredTick", "completed"): 5, ("MeteredTick", "failed"): 0, ("MeteredTick", "retried"): 0, ("MeteredTick", "cancelled"): 0,
                    ("MeteredBoom", "completed"): 0, ("MeteredBoom", "failed"): 1, ("MeteredBoom", "retried"): 0, ("MeteredBoom", "cancelled"): 0,
                    ("MeteredFlaky", "completed"): 1, ("MeteredFlaky", "failed"): 0, ("MeteredFlaky", "retried"): 1, ("MeteredFlaky", "cancelled"): 0,
                    ("MeteredAsyncTick", "completed"): 1, ("MeteredAsyncTick", "failed"): 0, ("MeteredAsyncTick", "retried"): 0,
                    ("MeteredAsyncTick", "cancelled"): 0}
    # The histogram: every run of a name counted once, in cumulative buckets ending at +Inf.
    for name, runs in (("MeteredTick", 5), ("MeteredBoom", 1), ("MeteredFlaky", 2), ("MeteredAsyncTick", 1)):
        assert value(s, "fastjobs_job_duration_seconds_count", queue="metered", name=name) == runs
        assert value(s, "fastjobs_job_duration_seconds_bucket", queue="metered", name=name, le="+Inf") == runs
        buckets = [value(s, "fastjobs_job_duration_seconds_bucket", queue="metered", name=name, le=str(b)) for b in metrics.BUCKETS]
        assert buckets == sorted(buckets)
        assert 0 < value(s, "fastjobs_job_duration_seconds_sum", queue="metered", name=name) < 5 * runs
    assert value(s, "fastjobs_queue_jobs", queue="metered", state="failed") == 1
    assert value(s, "fastjobs_queue_jobs", queue="metered", state="waiting") == 0
    assert value(s, "fastjobs_queue_outcomes_total", queue="metered", outcome="retried") == 1
    assert value(s, "fastjobs_queue_stalled_total", queue="metered") == 0
    assert value(s, "fastjobs_queue_paused", queue="metered") == 0
    assert value(s, "fastjobs_jobs_running") == 0
    return s


def test_a_worker_serves_its_metrics(spawn_worker: Any) -> None:
    port = free_port()
    w = spawn_worker("-q", "metered", "-c", "2", "--metrics-port", str(port), modules=["tests.apps.metric_jobs"])
    run_jobs()
    s = check_worker_metrics(port)
    info = [labels for (name, labels), v in s.items() if name == "fastjobs_worker_info" and v == 1]
    assert len(info) == 1
    labels = dict(info[0])
    assert labels["version"] == fastjobs.__version__ and labels["queues"] == "metered" and labels["concurrency"] == "2"
    assert labels["processes"] == "1" and labels["pid"] == str(w.proc.pid)
    assert get(port, "/other")[0] == 404


def test_a_pool_serves_one_endpoint_for_its_children(spawn_worker: Any) -> None:
    port = free_port()
    w = spawn_worker("-q", "metered", "--processes", "2", "--metrics-port", str(port), modules=["tests.apps.metric_jobs"])
    w.wait_for("child #2 started")
    run_jobs()
    s = check_worker_metrics(port)
    labels = dict(next(labels for (name, labels) in s if name == "fastjobs_worker_info"))
    assert labels["processes"] == "2" and labels["pid"] == str(w.proc.pid)


def test_a_taken_port_is_refused_before_the_worker_starts(spawn_worker: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        w = spawn_worker("-q", "metered", "--metrics-port", str(taken.getsockname()[1]), modules=["tests.apps.metric_jobs"])
        out = w.output()
    assert w.proc.returncode == 2
    assert "--metrics-port" in out and "cannot listen on it" in out


@pytest.mark.parametrize("port", [0, 70000, "9100", True])
def test_a_bad_port_is_refused(port: Any) -> None:
    with pytest.raises(ValueError, match="metrics_port must be a TCP port number"):
        fastjobs.Worker(["metered"], metrics_port=port)


def test_render_gives_the_queue_families(redis: Any) -> None:
    for i in range(3):
        MeteredTick.dispatch(i).send()
    MeteredTick.dispatch(9).delay(60).send()
    s = parse(metrics.render(["metered", fastjobs.Queue("other")]))
    assert value(s, "fastjobs_queue_jobs", queue="metered", state="waiting") == 3
    assert value(s, "fastjobs_queue_jobs", queue="metered", state="delayed") == 1
    assert value(s, "fastjobs_queue_jobs", queue="other", state="waiting") == 0
    assert ("fastjobs_queue_paused", frozenset({("queue", "other")})) in s
    assert metrics.render([]) == ""
