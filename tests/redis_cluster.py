"""A real local Redis Cluster for the tests and the benches: `redis-server --cluster-enabled yes`
processes on free ports, joined by `redis-cli --cluster create`, with what fault runs need
(which primary serves a queue, kill a node, time the failover).

    with RedisCluster(primaries=3, replicas=1) as cluster:
        fastjobs.configure(cluster.url)
        cluster.kill(cluster.port_for_queue("emails"))
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import NamedTuple

from .redis_procs import RedisProcesses

SLOTS = 16384


class Node(NamedTuple):
    """One line of CLUSTER NODES."""

    id: str
    port: int
    flags: set[str]
    primary: str  # the primary's id for a replica, "-" for a primary
    slots: list[tuple[int, int]]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port P whose cluster bus port P + 10000 is free too (Redis derives the one from the other)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536 and not {port, port + 10000} & taken and _bindable(port + 10000):
            taken.update((port, port + 10000))
            return port


class RedisCluster(RedisProcesses):
    """``primaries`` primaries with ``replicas`` replicas each, no persistence unless ``appendonly``.
    Nodes keep their files (nodes-P.conf, redis.log) in ``dir``/P; a temporary ``dir`` is removed by stop()."""

    def __init__(self, primaries: int = 3, replicas: int = 0, dir: str | None = None, appendonly: bool = False,
                 node_timeout_ms: int = 1000) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are not installed: run `make deps` (Debian package redis-server)")
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        super().__init__(dir, "cluster")
        taken: set[int] = set()
        self.ports = [free_cluster_port(taken) for _ in range(primaries * (1 + replicas))]
        try:
            for port in self.ports:
                node_dir = self.dir / str(port)
                node_dir.mkdir(parents=True, exist_ok=True)
                self.procs[port] = subprocess.Popen(
                    [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(node_timeout_ms),
                     "--save", "", "--appendonly", "yes" if appendonly else "no", "--dir", str(node_dir),
                     "--logfile", str(node_dir / "redis.log"),
                     # A replica syncs at once (not after the 5 s diskless delay), and may take over however
                     # long its link was down: a test kills a primary to see the failover, not Redis refuse it.
                     "--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait(lambda: all(self.command(p, "PING") == "PONG" for p in self.ports), 10, f"redis-server did not start on {self.ports}")
            # redis-cli makes the first `primaries` nodes of the list primaries and the rest their replicas.
            out = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                                  "--cluster-replicas", str(replicas), "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {(out.stdout + out.stderr).strip()[-500:]}")
            self._wait(self._ready, 30, "the cluster did not reach cluster_state:ok on every node")
            # The primaries as started: a client learns the rest (replicas, later failovers) from any of them.
            self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.primaries())
        except BaseException:
            self.stop()
            raise

    def info(self, port: int, section: str) -> dict[str, str]:
        if section != "cluster":
            return super().info(port, section)
        text = str(self.command(port, "CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def _ready(self) -> bool:
        """Every live node agrees: state ok, all slots served, every live node known, and every
        replica in sync with its primary (a replica that never synced would not take over)."""
        live = self.alive()
        for port in live:
            i = self.info(port, "cluster")
            if i.get("cluster_state") != "ok" or i.get("cluster_slots_ok") != str(SLOTS) or int(i.get("cluster_known_nodes", 0)) < len(live):
                return False
            r = self.info(port, "replication")
            if r.get("role") == "slave" and r.get("master_link_status") != "up" and r.get("master_port") and int(r["master_port"]) in live:
                return False
        return True

    def _nodes(self) -> list[Node]:
        """CLUSTER NODES as a live node sees it: id, port, flags, primary id, slot ranges."""
        for port in self.alive():
            try:
                text = str(self.command(port, "CLUSTER", "NODES"))
            except (OSError, RuntimeError):
                continue
            nodes = []
            for line in text.splitlines():
                f = line.split()
                # Slots are "a-b" or "a"; "[slot->-id]" entries are migrations in progress.
                ranges = [(int(r.split("-")[0]), int(r.split("-")[-1])) for r in f[8:] if not r.startswith("[")]
                nodes.append(Node(f[0], int(f[1].split("@")[0].rsplit(":", 1)[1]), set(f[2].split(",")), f[3], ranges))
            return nodes
        raise RuntimeError("no node of the cluster is alive")

    def primaries(self) -> list[int]:
        """Ports of the primaries serving slots now, in slot order (the first one serves slot 0)."""
        live = [n for n in self._nodes() if "master" in n.flags and "fail" not in n.flags and n.slots]
        return [n.port for n in sorted(live, key=lambda n: min(n.slots))]

    def replicas_of(self, port: int) -> list[int]:
        nodes = self._nodes()
        ids = [n.id for n in nodes if n.port == port]
        return sorted(n.port for n in nodes if ids and n.primary == ids[0] and "fail" not in n.flags)

    def port_for_queue(self, queue: str) -> int:
        """The primary holding a queue's keys: all share the hash tag {queue}, so one slot."""
        port = self.alive()[0]
        slot = int(self.command(port, "CLUSTER", "KEYSLOT", f"{{{queue}}}"))
        for start, end, primary, *_ in self.command(port, "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise RuntimeError(f"slot {slot} is not served")

    def wait_for_failover(self, old_primary_port: int, timeout: float = 15) -> float:
        """Seconds from kill(old_primary_port) (or from now) until a replica serves its slots and
        every live node says cluster_state:ok again."""
        start = self._killed_at.get(old_primary_port, time.monotonic())

        def promoted() -> bool:
            return old_primary_port not in self.primaries() and self._ready()

        self._wait(promoted, timeout, f"no replica took over from {old_primary_port} within {timeout} s")
        return time.monotonic() - start
