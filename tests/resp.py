"""A minimal RESP client for tests: lets a test read or tamper with keys directly, without
adding a Redis client library to the test dependencies."""

from __future__ import annotations

import socket
from typing import Any


class Redis:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.addr = (host, port)

    def command(self, *args: Any) -> Any:
        with socket.create_connection(self.addr, timeout=5) as s:
            s.sendall(self._encode(args))
            with s.makefile("rb") as f:
                return self._read(f)

    __call__ = command

    @staticmethod
    def _encode(args: tuple[Any, ...]) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _read(self, f: Any) -> Any:
        line = f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read(f) for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")
