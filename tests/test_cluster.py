"""fastjobs on a real Redis Cluster (3 primaries started for the test run, tests/redis_cluster.py):
queues on different nodes, one worker on all of them, chains and flows across nodes, a busy
queue's slot moved to another node (MOVED and ASK answers followed), and clear errors for URLs
that name the wrong kind of server. The store tests run whole on a cluster too
(FASTJOBS_TEST_STORE=cluster)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import JobChain, JobFlow, Queue, config

from .apps.jobs import Gather, Leaf
from .conftest import RedisServer, eventually
from .redis_cluster import RedisCluster, free_cluster_port
from .test_connection import make_certs

RAN: list[tuple[str, int]] = []


class Hop(fastjobs.Job[int, int]):
    """Adds its payload to the previous step's result; records where it ran."""

    def process(self, payload: int) -> int:
        RAN.append((self.queue_name, payload))
        return payload + (self.previous_result or 0)


def on_distinct_nodes(cluster: RedisCluster, n: int, stem: str) -> list[str]:
    """``n`` queue names whose slots are served by ``n`` different primaries."""
    names: list[str] = []
    ports: set[int] = set()
    i = 0
    while len(names) < n:
        q = f"{stem}{i}"
        port = cluster.port_for_queue(q)
        if port not in ports:
            names.append(q)
            ports.add(port)
        i += 1
    return names


@pytest.fixture
def cluster(redis_cluster: RedisCluster, prefix: str) -> Iterator[RedisCluster]:
    config.reset()
    fastjobs.configure(redis_cluster.url, prefix=prefix)
    RAN.clear()
    yield redis_cluster
    config.reset()


def test_one_worker_drains_queues_on_three_nodes(cluster: RedisCluster, start_worker: Any) -> None:
    queues = on_distinct_nodes(cluster, 3, "spread")
    bulk = [Hop.dispatch_many(list(range(300)), queue=q) for q in queues]
    singles = [Hop.dispatch(7).on_queue(q).send() for q in queues]
    assert [Queue(q).counts()["waiting"] for q in queues] == [301] * 3
    start_worker(queues=queues, concurrency=8)
    assert [h.wait_result(timeout=20) for h in singles] == [7, 7, 7]
    eventually(lambda: [Queue(q).counts()["completed"] for q in queues] == [301] * 3, timeout=30)
    assert sorted(RAN) == sorted((q, i) for q in queues for i in [*range(300), 7])
    assert all(b.handle(0).status() == "completed" for b in bulk)


def test_chains_and_flows_cross_nodes(cluster: RedisCluster, start_worker: Any) -> None:
    a, b, c = on_distinct_nodes(cluster, 3, "hop")
    start_worker(queues=[a, b, c, "flows"], concurrency=4)
    chain = JobChain([Hop.dispatch(1).on_queue(a), Hop.dispatch(10).on_queue(b), Hop.dispatch(100).on_queue(c)]).dispatch()
    assert chain.wait_result(timeout=20) == 111
    assert RAN == [(a, 1), (b, 10), (c, 100)]
    assert [s.state for s in chain.steps()] == ["completed"] * 3
    # Children on three nodes, the parent on the flows queue's.
    flow = JobFlow(Gather.dispatch(None))
    for q, v in ((a, 1), (b, 2), (c, 3)):
        flow.add_child_job(Leaf.dispatch(v).on_queue(q))
    assert flow.dispatch().wait_result(timeout=20) == {"count": 3, "sum": 6, "errors": []}


def test_wait_result_and_events_on_a_cluster(cluster: RedisCluster, start_worker: Any) -> None:
    q = on_distinct_nodes(cluster, 2, "told")[1]
    Queue(q).set_events(True)
    h = Hop.dispatch(5).on_queue(q).send()
    start_worker(queues=[q])
    assert h.wait_result(timeout=10) == 5  # told through pub/sub, on any node
    kinds = [e.type for e in Queue(q).events(since="0", timeout=0.5)]
    assert kinds[:3] == ["waiting", "active", "completed"], kinds


def move_slot(cluster: RedisCluster, queue: str, to: int) -> None:
    """Moves the slot of ``queue`` to the primary on port ``to`` as redis-cli does, step by
    step: importing and migrating marks, keys moved in batches (clients meanwhile get ASK for
    keys already moved, TRYAGAIN for scripts whose keys are split), then the new owner."""
    cmd = cluster.command
    src = cluster.port_for_queue(queue)
    slot = int(cmd(src, "CLUSTER", "KEYSLOT", f"{{{queue}}}"))
    src_id, dst_id = str(cmd(src, "CLUSTER", "MYID")), str(cmd(to, "CLUSTER", "MYID"))
    cmd(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while keys := cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, 20):
        cmd(src, "MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
        time.sleep(0.01)  # let clients meet the half-moved slot
    for port in cluster.primaries():
        cmd(port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def test_a_busy_queues_slot_moved_to_another_node_loses_nothing(cluster: RedisCluster, start_worker: Any) -> None:
    q = "moving"
    backlog = Hop.dispatch_many(list(range(2_000)), queue=q)
    sent: list[Any] = [backlog.handle(i) for i in range(len(backlog))]
    errors: list[str] = []
    halt = threading.Event()

    def produce() -> None:
        n = 10_000
        while not halt.is_set():
            try:
                sent.append(Hop.dispatch(n).on_queue(q).send())
                n += 1
            except fastjobs.ConnectionError as e:  # TRYAGAIN while a script's keys are split
                errors.append(str(e))
            time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    start_worker(queues=[q], concurrency=4)
    eventually(lambda: Queue(q).counts()["completed"] >= 300, timeout=20)
    src = cluster.port_for_queue(q)
    dst = next(p for p in cluster.primaries() if p != src)
    move_slot(cluster, q, dst)
    assert cluster.port_for_queue(q) == dst
    eventually(lambda: len(sent) >= 2_000 + 200, timeout=20)  # dispatches go on after the move
    halt.set()
    producer.join(10)
    eventually(lambda: Queue(q).counts()["waiting"] + Queue(q).counts()["active"] == 0, timeout=60)
    assert {h.status() for h in sent} == {"completed"}
    assert Queue(q).counts()["completed"] == len(sent)
    assert all("try again" in e for e in errors), errors[:3]
    assert sum(1 for queue, _ in RAN if queue == q) == len(sent)  # each once: no lease was lost


def test_urls_that_name_the_wrong_kind_of_server_are_refused_clearly(redis_cluster: RedisCluster, redis_server: RedisServer) -> None:
    config.reset()
    fastjobs.configure(f"redis+cluster://127.0.0.1:{redis_server.port}")
    with pytest.raises(ValueError, match="is not a node of a Redis Cluster"):
        Hop.dispatch(1).send()
    config.reset()
    # A redis:// URL naming one node: a queue served by another is refused with the fix.
    node = redis_cluster.primaries()[0]
    q = next(f"elsewhere{i}" for i in range(100) if redis_cluster.port_for_queue(f"elsewhere{i}") != node)
    fastjobs.configure(f"redis://127.0.0.1:{node}")
    with pytest.raises(fastjobs.StoreError, match=r"is a node of a Redis Cluster.*connect with a redis\+cluster:// URL"):
        Hop.dispatch(1).on_queue(q).send()
    config.reset()
    with pytest.raises(ValueError, match="a cluster has database 0 only"):
        fastjobs.configure(f"redis+cluster://127.0.0.1:{node}/3")
    fastjobs.configure(redis_cluster.url)
    with pytest.raises(ValueError, match="invalid queue name"):
        Hop.dispatch(1).on_queue("a{b}").send()  # braces would move the queue's hash tag


def test_a_cluster_over_tls(tmp_path: Path, start_worker: Any) -> None:
    """Nodes that speak TLS only, to clients and on the cluster bus: CLUSTER SLOTS then gives
    their TLS ports, and every connection fastjobs opens to a node verifies it."""
    certs = make_certs(tmp_path)
    tls = ["--tls", "--cacert", str(certs / "ca.pem")]
    taken: set[int] = set()
    ports = [free_cluster_port(taken) for _ in range(3)]
    procs = [subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(p), "--bind", "127.0.0.1", "--tls-cert-file",
                               str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file",
                               str(certs / "ca.pem"), "--tls-auth-clients", "no", "--tls-cluster", "yes", "--cluster-enabled", "yes",
                               "--cluster-config-file", f"nodes-{p}.conf", "--dir", str(tmp_path), "--save", ""],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    cli = shutil.which("redis-cli") or "redis-cli"

    def ask(port: int, *args: str) -> str:
        return subprocess.run([cli, *tls, "-p", str(port), *args], capture_output=True, text=True, timeout=10).stdout

    try:
        eventually(lambda: all(ask(p, "PING").strip() == "PONG" for p in ports), timeout=10)
        made = subprocess.run([cli, *tls, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stdout[-500:] + made.stderr[-500:]
        eventually(lambda: all("cluster_state:ok" in ask(p, "CLUSTER", "INFO") for p in ports), timeout=30)
        config.reset()
        url = f"rediss+cluster://127.0.0.1:{ports[0]}"
        fastjobs.configure(url, tls_ca_file=str(certs / "ca.pem"))
        handles = [Hop.dispatch(i).on_queue(q).send() for i, q in enumerate(["a", "b", "c"])]  # on 3 nodes (slots 15495, 3300, 7365)
        start_worker(queues=["a", "b", "c"])
        assert [h.wait_result(timeout=10) for h in handles] == [0, 1, 2]
        fastjobs.configure(url, connection="unchecked", connect_timeout=2)
        with pytest.raises(fastjobs.ConnectionError, match="UnknownIssuer"):
            Queue("a", connection="unchecked").counts()
    finally:
        config.reset()
        for proc in procs:
            proc.kill()
            proc.wait()
