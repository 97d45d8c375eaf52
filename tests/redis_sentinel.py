"""A real local Redis primary and replica watched by Redis Sentinel, for the tests and the benches:
`redis-server` processes on free ports, the sentinels being `redis-server <conf> --sentinel`, with
what fault runs need (which node is the primary, kill a node, time the failover).

    with RedisSentinel(sentinels=3) as sentinel:
        fastjobs.configure(sentinel.url)
        old = sentinel.primary_port()
        sentinel.kill(old)
        sentinel.wait_for_failover(old)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .redis_procs import RedisProcesses


def free_port(taken: set[int]) -> int:
    """A free port not handed out already: the OS may offer a port again once its probe socket is closed."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


def _pairs(flat: list[Any]) -> dict[str, str]:
    """A SENTINEL MASTER/REPLICAS/SENTINELS entry (a flat name, value, name, value list) as a dict."""
    text = [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    return dict(zip(text[::2], text[1::2]))


class RedisSentinel(RedisProcesses):
    """A primary and one replica, no persistence, watched by ``sentinels`` sentinels that fail over
    with a majority quorum. Nodes keep their files (redis.log, sentinel.conf) in ``dir``/P; a
    temporary ``dir`` is removed by stop()."""

    def __init__(self, sentinels: int = 3, dir: str | None = None, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 service: str = "mymaster") -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed: run `make deps` (Debian package redis-server)")
        if sentinels < 1:
            raise ValueError("at least one sentinel is needed")
        self.service = service
        super().__init__(dir, "sentinel")
        taken: set[int] = set()
        self.ports = [free_port(taken) for _ in range(2)]  # the primary as started, then its replica
        self.sentinel_ports = [free_port(taken) for _ in range(sentinels)]
        primary, replica = self.ports
        try:
            for port in self.ports:
                node_dir = self._node_dir(port)
                # A replica syncs at once rather than after the 5 s diskless delay.
                args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(node_dir),
                        "--logfile", str(node_dir / "redis.log"), "--repl-diskless-sync-delay", "0"]
                if port == replica:
                    args += ["--replicaof", "127.0.0.1", str(primary)]
                self.procs[port] = subprocess.Popen([server, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait(lambda: self.info(replica, "replication").get("master_link_status") == "up", 15,
                       f"replica {replica} did not sync with primary {primary}")
            quorum = sentinels // 2 + 1
            for port in self.sentinel_ports:
                node_dir = self._node_dir(port)
                conf = node_dir / "sentinel.conf"
                # Sentinel rewrites its config file (its id, the replicas and sentinels it found, failovers),
                # so each one gets its own writable copy.
                conf.write_text("\n".join([
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {node_dir}",
                    f"logfile {node_dir / 'redis.log'}",
                    f"sentinel monitor {service} 127.0.0.1 {primary} {quorum}",
                    f"sentinel down-after-milliseconds {service} {down_after_ms}",
                    f"sentinel failover-timeout {service} {failover_timeout_ms}",
                    f"sentinel parallel-syncs {service} 1",
                ]) + "\n")
                self.procs[port] = subprocess.Popen([server, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Sentinels find the replica through the primary's INFO and each other through hello messages
            # (every 2 s): a sentinel that knows neither cannot reach the quorum or pick a replica.
            self._wait(self._ready, 30, f"the sentinels {self.sentinel_ports} did not all see primary {primary}, its replica and each other")
            self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{service}"
        except BaseException:
            self.stop()
            raise

    def _node_dir(self, port: int) -> Path:
        node_dir = self.dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        return node_dir

    def role(self, port: int) -> str:
        """The node's own word on its role (ROLE): "master" or "slave", whatever the sentinels believe."""
        reply = self.command(port, "ROLE")
        first = reply[0]
        return first.decode() if isinstance(first, bytes) else str(first)

    def _sentinel_primary(self, sentinel: int) -> int:
        reply = self.command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if not reply:
            raise RuntimeError(f"sentinel {sentinel} does not monitor {self.service}")
        return int(reply[1])

    def _ready(self) -> bool:
        """Every live sentinel names the primary, sees a healthy replica (one whose link is down or
        whose INFO is stale would not be promoted) and knows every other live sentinel."""
        live = self.alive()
        sentinels = [p for p in self.sentinel_ports if p in live]
        primary = self.ports[0]
        for port in sentinels:
            if self._sentinel_primary(port) != primary:
                return False
            replicas = [_pairs(r) for r in self.command(port, "SENTINEL", "REPLICAS", self.service)]
            if not any(r.get("flags") == "slave" and r.get("master-link-status") == "ok" for r in replicas):
                return False
            if len(self.command(port, "SENTINEL", "SENTINELS", self.service)) < len(sentinels) - 1:
                return False
        return True

    def primary_port(self) -> int:
        """The primary's port as the first live sentinel that answers names it."""
        for port in self.sentinel_ports:
            if port in self.alive():
                try:
                    return self._sentinel_primary(port)
                except (OSError, RuntimeError):
                    continue
        raise RuntimeError("no sentinel is alive")

    def replica_ports(self) -> list[int]:
        """Live data nodes that say they are replicas (ROLE), whichever primary they follow."""
        ports = []
        for port in self.ports:
            if port in self.alive():
                try:
                    if self.role(port) == "slave":
                        ports.append(port)
                except (OSError, RuntimeError):
                    continue
        return ports

    def wait_for_failover(self, old_primary_port: int, timeout: float = 20) -> float:
        """Seconds from kill(old_primary_port) (or from now) until every live sentinel names one other
        primary and that node says role:master itself. Every sentinel, not the first: the others learn
        of the failover from hello messages up to 2 s later, and until then a client (or primary_port())
        asking one of them is sent to the dead node. role:master: a sentinel may name the new primary
        before it has taken REPLICAOF NO ONE, and a client sent there would find a read-only replica."""
        start = self._killed_at.get(old_primary_port, time.monotonic())

        def promoted() -> bool:
            named = {self._sentinel_primary(p) for p in self.sentinel_ports if p in self.alive()}
            if len(named) != 1:
                return False
            primary = named.pop()
            return primary != old_primary_port and self.role(primary) == "master"

        self._wait(promoted, timeout, f"the sentinels did not all name a new primary in place of {old_primary_port} within {timeout} s")
        return time.monotonic() - start
