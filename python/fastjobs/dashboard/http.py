"""The little HTTP the dashboard needs, on plain ASGI: a request read from the scope and the
body, JSON and static responses. No framework, so the package gains no dependency."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import orjson

__all__ = ["Request", "Response", "HTTPError", "json_response", "Scope", "Receive", "Send"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The largest request body read (actions carry none; the login form a token).
MAX_BODY = 64 * 1024

#: Sent with every response: the pages load only our own files and cannot be framed.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class HTTPError(Exception):
    """Ends a request with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str  # below the mount point, starting with "/"
    root_path: str  # where the dashboard is mounted ("" at the root)
    query: dict[str, list[str]]
    headers: dict[str, str]
    cookies: dict[str, str]
    scheme: str
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def read(cls, scope: Scope, receive: Receive) -> Request:
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        cookies: dict[str, str] = {}
        if "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except Exception:  # noqa: BLE001 - a malformed cookie header counts as none
                jar = SimpleCookie()
            cookies = {k: m.value for k, m in jar.items()}
        root = scope.get("root_path", "") or ""
        path = scope.get("path", "/") or "/"
        if root and path.startswith(root):
            path = path[len(root):]  # Starlette's Mount and uvicorn --root-path keep the prefix in path
        body = b""
        if scope["method"] in ("POST", "PUT", "DELETE"):
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = bool(message.get("more_body", False))
                if len(body) > MAX_BODY:
                    raise HTTPError(413, f"request body over {MAX_BODY} bytes")
        return cls(
            method=scope["method"],
            path=path,
            root_path=root,
            query=parse_qs(scope.get("query_string", b"").decode("latin-1")),
            headers=headers,
            cookies=cookies,
            scheme=scope.get("scheme", "http"),
            body=body,
        )

    def arg(self, name: str, default: int, *, low: int, high: int) -> int:
        """An integer query argument in [low, high]."""
        values = self.query.get(name)
        if not values:
            return default
        try:
            n = int(values[0])
        except ValueError:
            raise HTTPError(400, f"{name} must be an integer, got {values[0]!r}") from None
        if not low <= n <= high:
            raise HTTPError(400, f"{name} must be {low} to {high}, got {n}")
        return n

    def form(self) -> dict[str, str]:
        """The body as JSON object or URL-encoded form, strings only."""
        if not self.body:
            return {}
        if self.headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(self.body)
            except ValueError:
                raise HTTPError(400, "the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise HTTPError(400, "the body must be a JSON object")
            return {k: v for k, v in data.items() if isinstance(v, str)}
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def with_cookie(self, cookie: str) -> Response:
        self.headers.append((b"set-cookie", cookie.encode("latin-1")))
        return self

    async def send(self, send: Send) -> None:
        headers = [(b"content-type", self.content_type.encode()), (b"content-length", str(len(self.body)).encode()),
                   *SECURITY_HEADERS, *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS))
