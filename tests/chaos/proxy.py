"""A TCP proxy on loopback between fastjobs clients and a redis-server, with network faults on
demand: ``cut()``, ``blackhole()``, ``resume()``. Pure Python, two threads per connection.

- pass (the start, and after ``resume()``): bytes go through both ways as they come.
- ``cut()``: every open connection is closed at once (reset, as a broken link or a restarted
  middlebox would), and new connections are reset as soon as they are accepted, until
  ``resume()``.
- ``blackhole()``: connections stay open, and new ones are accepted, but nothing is forwarded
  in either direction: what each side sends is read and dropped, so its writes succeed and it
  waits for answers that never come (a link that silently drops every packet). A connection
  that lost bytes this way can never be used again (its byte stream has a hole: the next
  answer read would belong to an earlier request), so ``resume()`` resets those, as the TCP
  stacks of both ends do in the end once their retransmissions go unanswered; connections
  that lost nothing carry on.
- ``lose_answers()``: requests still reach the server, and run there, but its answers are
  dropped: the client cannot tell whether what it sent was done. ``resume()`` resets the
  connections that lost answers, as above.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Literal

Mode = Literal["pass", "cut", "blackhole", "lose_answers"]


def _reset(sock: socket.socket) -> None:
    """Closes with a reset (RST), not an orderly FIN: the peer's next read or write fails."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes the forwarding thread blocked in recv()
    except OSError:
        pass
    sock.close()


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: Proxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.dropped = 0  # bytes read and not forwarded (blackhole)
        self.closed = False

    def start(self) -> None:
        for src, dst in ((self.client, self.server), (self.server, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="chaos-proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.proxy._lock:
                    mode = self.proxy.mode
                    if mode == "blackhole" or (mode == "lose_answers" and src is self.server):
                        self.dropped += len(data)
                        continue
                dst.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        with self.proxy._lock:
            if self.closed:
                return
            self.closed = True
            self.proxy._links.discard(self)
        _reset(self.client)
        _reset(self.server)


class Proxy:
    """Listens on 127.0.0.1 (a free port, kept for its whole life) and forwards to
    ``127.0.0.1:target_port``. ``url`` is what clients and workers are configured with."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.mode: Mode = "pass"
        self.accepted = 0  # connections accepted in pass or blackhole mode
        self.refused = 0  # connections reset at once while cut
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="chaos-proxy-accept")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                mode = self.mode
            if mode == "cut":
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)  # the server is down: the client sees its connection fail
                continue
            server.settimeout(None)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:
                if self.mode == "cut":  # cut while connecting
                    self.refused += 1
                    _reset(client)
                    _reset(server)
                    continue
                self._links.add(link)
                self.accepted += 1
            link.start()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def cut(self) -> None:
        """Closes every open connection at once and resets new ones until ``resume()``."""
        with self._lock:
            self.mode = "cut"
            links = list(self._links)
        for link in links:
            link.close()

    def blackhole(self) -> None:
        """Forwards nothing, either way, until ``resume()``: bytes sent meanwhile are dropped."""
        with self._lock:
            self.mode = "blackhole"

    def lose_answers(self) -> None:
        """Forwards requests to the server but drops its answers, until ``resume()``."""
        with self._lock:
            self.mode = "lose_answers"

    def resume(self) -> None:
        """Back to passing bytes. Connections that lost bytes in a blackhole are reset."""
        with self._lock:
            self.mode = "pass"
            broken = [link for link in self._links if link.dropped]
        for link in broken:
            link.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread (close alone does not)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
